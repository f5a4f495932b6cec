"""Evaluating a dataset through ANOTHER embodiment's tokenizer whose card maps the same slots (the zero-shot probe):
`MixtureEntry.tokenizer`, `evaluate(tokenizer=)`, `uact eval --tokenizer`.

The other embodiment is a twin of CarRacing: the same card (source, native layout, slots) under another name and
embodiment, its tokenizer fitted from 3 of the 5 recorded episodes (its own statistics, its own embodiment token).
The exported model is the evaluation fixtures' tiny CarRacing model, exported knowing the twin and Pong too.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from support import run_cli, tree_digest, twin_card

from evaluation.conftest import one_thread
from unified_action.cards import load_card
from unified_action.data.loader import ClipLoader, LoaderConfig, MixtureEntry
from unified_action.errors import DataError
from unified_action.evaluation import evaluate
from unified_action.models.pretrained import load_pretrained
from unified_action.tokenization import Registry
from unified_action.training.export import export_meta, write_export

TWIN = "carracing_twin"


@pytest.fixture(scope="module")
def twin(evalsetup, tmp_path_factory):
    s = evalsetup
    root = tmp_path_factory.mktemp("twin")
    reg = Registry(root / "tokenizers")
    shutil.copytree(s["registry"].root, reg.root)  # the session's registry stays as it is
    card = load_card(twin_card(root / "cards", "carracing", TWIN, "twin_car"))
    reg.register(card, list(s["carracing"].iter_actions())[:3])
    model, _ = load_pretrained(s["export"], s["registry"])
    meta = export_meta(model.cfg.to_dict(), reg, ["ale_pong", "carracing", TWIN], {"config": "tests/evaluation twin"})
    export = write_export(model.state_dict(), meta, root / "export", trained={"step": 20, "run": meta["run"]})
    return {**s, "registry": reg, "export": export, "root": root}


def loader_clips(t, tokenizer):
    cfg = LoaderConfig(datasets=(MixtureEntry(str(t["carracing"].root), episodes=(3, 5), tokenizer=tokenizer),),
                       registry=str(t["registry"].root), context_frames=2, future_frames=2, image_size=(32, 32),
                       batch_size=4, seed=0)
    return next(iter(ClipLoader(cfg, rank=0, world_size=1)))


def test_the_loader_encodes_a_dataset_through_a_shared_slot_tokenizer(twin):
    """The twin's embodiment token and its normalization encode CarRacing's native actions; the clips, their frames
    and keys are the dataset's own."""
    reg = twin["registry"]
    own, other = reg.load("carracing"), reg.load(TWIN)
    assert own.spec.embodiment_token != other.spec.embodiment_token
    assert own.stats.to_json() != other.stats.to_json()  # fitted from other episodes: its own normalization
    a, b = loader_clips(twin, None), loader_clips(twin, TWIN)
    assert a["key"] == b["key"] and np.array_equal(a["frames"].numpy(), b["frames"].numpy())
    assert set(a["embodiment"].tolist()) == {own.spec.embodiment_token}
    assert set(b["embodiment"].tolist()) == {other.spec.embodiment_token}
    episodes = list(twin["carracing"].iter_actions())
    L = own.spec.chunk_length
    for batch, tok in ((a, own), (b, other)):  # each clip's tokens are exactly that tokenizer's encoding of its actions
        for i, key in enumerate(batch["key"]):
            ep, start = key.rsplit("/", 1)[1].split("@")
            windows = np.stack([episodes[int(ep)][t:t + L] for t in int(start) + np.arange(4) * L])
            want = tok.encode_native(windows, batch["action_tokens"].shape[-1])
            assert np.array_equal(batch["action_tokens"][i].numpy(), want.tokens)
            assert (batch["action_tokens"][i, :, 1] == tok.spec.embodiment_token).all()


def test_evaluate_through_a_shared_slot_tokenizer(twin):
    with one_thread():
        own = evaluate(twin["export"], twin["registry"], [twin["carracing"].root], episodes=(3, 5), horizon=2, clips=2,
                       progress=False).datasets[0]
        other = evaluate(twin["export"], twin["registry"], [twin["carracing"].root], episodes=(3, 5), horizon=2, clips=2,
                         progress=False, tokenizer=TWIN)
    r = other.datasets[0]
    assert (own.tokenizer, own.embodiment, own.notes[:1]) != (r.tokenizer, r.embodiment, r.notes[:1])
    assert own.tokenizer == "carracing" and own.embodiment == "carracing_car"
    assert r.name == "carracing" and r.tokenizer == TWIN and r.embodiment == "twin_car" and r.keys == own.keys
    assert any(f"tokenizer '{TWIN}'" in n for n in r.notes)
    # another embodiment token: other rollouts of the same clips
    assert not np.array_equal(own.values["psnr"], r.values["psnr"])
    assert other.to_json()["datasets"]["carracing"]["tokenizer"] == TWIN


def test_an_incompatible_tokenizer_is_refused_in_one_line(twin, monkeypatch, capsys, tmp_path):
    """Pong's card maps gamepad buttons: refused naming the slots that differ, before any rollout; so is a tokenizer
    the model does not know, or one the registry lacks."""
    t = twin
    with pytest.raises(DataError) as e:
        loader_clips(t, "ale_pong")
    msg = str(e.value)
    assert "\n" not in msg and "'ale_pong' cannot encode the actions of 'carracing'" in msg
    assert "vehicle.steer" in msg and "gamepad.a" in msg and "native action dimension 3" in msg
    with pytest.raises(DataError, match="ale_pong"):
        evaluate(t["export"], t["registry"], [t["carracing"].root], episodes=(3, 5), horizon=2, clips=1,
                 progress=False, tokenizer="ale_pong")
    with pytest.raises(DataError, match="not registered"):
        loader_clips(t, "carracing_twni")

    before = tree_digest(t["root"])
    out = tmp_path / "eval"
    base = ["eval", "--model", t["export"], "--registry", t["registry"].root, "--data", t["carracing"].root,
            "--horizon", 2, "--clips", 1, "--out", out]
    code, stdout, err = run_cli(monkeypatch, capsys, *base, "--tokenizer", "ale_pong")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "slots differ" in err and "vehicle.steer" in err
    code, _, err = run_cli(monkeypatch, capsys, *base[:-2], "--out", out, "--tokenizer", "gym_pusht")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not trained with" in err, err
    assert not out.exists() and tree_digest(t["root"]) == before


@pytest.mark.slow
def test_eval_command_through_a_shared_slot_tokenizer(twin, monkeypatch, capsys, tmp_path):
    out = tmp_path / "eval"
    code, stdout, err = run_cli(monkeypatch, capsys, "eval", "--model", twin["export"], "--registry",
                                twin["registry"].root, "--data", twin["carracing"].root, "--horizon", 2, "--clips", 1,
                                "--tokenizer", TWIN, "--out", out)
    assert code == 0, err
    assert f"through tokenizer '{TWIN}'" in stdout
    m = json.loads((out / "metrics.json").read_text())["datasets"]["carracing"]
    assert m["tokenizer"] == TWIN and m["embodiment"] == "twin_car"
