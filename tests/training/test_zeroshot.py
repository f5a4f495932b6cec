"""Zero-shot registration of a held-out embodiment (training/finetune.py): `finetune.new_embodiment_init: shared_slots`
and `train.steps: 0`.

The "pretrained" export is the jobs' tiny model at its initial weights, knowing CarRacing, Pong and a second car
(`carracing_b`: CarRacing's card under another embodiment, as two arms whose cards map the same slots). The held-out
embodiment is a third car, `carracing_c`, recorded from the real simulator; Push-T (planar arm slots) shares no slot
with any of them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from data.conftest import record
from safetensors.torch import load_file
from support import run_cli, tree_digest, twin_card

from training.conftest import job, write_job
from unified_action.cards import load_card
from unified_action.data.convert import SourceSpec, WriteSettings, write_dataset
from unified_action.data.dataset import open_dataset
from unified_action.tokenization import Registry
from unified_action.training.config import TrainConfig

PRETRAINED = ["ale_pong", "carracing", "carracing_b"]
TOKEN = "actions.token.weight"


@pytest.fixture(scope="module")
def zs(mixture, tmp_path_factory):
    from unified_action.training.export import export_meta, write_export
    from unified_action.training.trainer import build_model

    root = tmp_path_factory.mktemp("zeroshot")
    reg = Registry(root / "tokenizers")
    shutil.copytree(mixture["registry"], reg.root)  # the session's mixture registry stays as it is
    car = open_dataset(mixture["datasets"][0])
    reg.register(load_card(twin_card(root / "cards", "carracing", "carracing_b", "car_b")), list(car.iter_actions())[:3])
    cfg = TrainConfig.model_validate(job({**mixture, "registry": str(reg.root)}, root / "pre"))
    model = build_model(cfg, reg.vocabulary().size, max(reg.spec(n).max_tokens for n in PRETRAINED))
    meta = export_meta(model.cfg.to_dict(), reg, PRETRAINED, {"config": "tests/training zero-shot"})
    export = write_export(model.state_dict(), meta, root / "pre" / "export", trained={"step": 0, "run": meta["run"]})
    card = twin_card(root / "cards", "carracing", "carracing_c", "car_c")
    new = write_dataset(SourceSpec(str(card), "sim", episodes=3, steps=40, seed=9), root / "carracing_c", workers=1,
                        settings=WriteSettings(image_size=(32, 32), shard_bytes=150 * 1024), progress=False)
    pusht = record(root / "gym_pusht", "gym_pusht", episodes=2, steps=40, seed=7)
    return {"root": root, "registry": reg.root, "export": export, "new": new.root, "pusht": pusht.root}


def zs_job(z: dict, tmp: Path, init: str = "shared_slots", dataset: Path | None = None) -> dict:
    """A 0-step fine-tuning job on the held-out car's first 2 episodes, with its own copy of the registry."""
    reg = tmp / "tokenizers"
    if not reg.exists():
        shutil.copytree(z["registry"], reg)
    d = job({"registry": str(reg), "datasets": [str(dataset or z["new"])]}, tmp / "run", steps=0)
    d["finetune"] = {"init_from": str(z["export"]), "mode": "lora", "episodes": 2, "new_embodiment_init": init}
    return d


def test_zero_step_finetune_starts_the_new_embodiment_from_the_embodiments_sharing_its_slots(zs, tmp_path, capsys):
    from unified_action.evaluation import evaluate
    from unified_action.models.pretrained import load_pretrained
    from unified_action.training.finetune import finetune

    result = finetune(TrainConfig.model_validate(zs_job(zs, tmp_path)), progress=False)
    assert result.step == 0 and result.export == tmp_path / "run" / "export"
    log = capsys.readouterr().out
    reg = Registry(tmp_path / "tokenizers")
    c, a, b = (reg.spec(n).embodiment_token for n in ("carracing_c", "carracing", "carracing_b"))
    assert len({a, b, c}) == 3
    assert "'carracing_c'" in log and "mean of carracing, carracing_b" in log and "3 of its 3 slots shared" in log

    before, after = load_file(zs["export"] / "model.safetensors"), load_file(result.export / "model.safetensors")
    assert before.keys() == after.keys()
    assert torch.allclose(after[TOKEN][c], (before[TOKEN][a] + before[TOKEN][b]) / 2, rtol=0, atol=1e-7)
    assert not torch.allclose(after[TOKEN][c], before[TOKEN][c], atol=1e-3)  # the default: the pretrained row
    assert torch.equal(torch.cat([after[TOKEN][:c], after[TOKEN][c + 1:]]), torch.cat([before[TOKEN][:c], before[TOKEN][c + 1:]]))
    assert all(torch.equal(before[k], after[k]) for k in before if k != TOKEN)  # nothing else moved: no step was taken

    model, config = load_pretrained(result.export, reg)
    assert config["trained"]["step"] == 0 and config["embodiments"]["carracing_c"] == c
    assert set(config["tokenizers"]) == {*PRETRAINED, "carracing_c"}
    info = config["trained"]["run"]["finetune"]
    assert info["new_embodiment_init"] == "shared_slots" and info["new_tokenizers"] == ["carracing_c"]
    assert info["shared_slots"]["carracing_c"]["donors"] == ["carracing", "carracing_b"]
    assert reg.fitted_from("carracing_c")["episodes"] == [0, 2]  # registered from the job's K episodes
    r = evaluate(result.export, reg, [zs["new"]], episodes=(2, 3), horizon=2, clips=1, progress=False).datasets[0]
    assert r.name == "carracing_c" and r.embodiment == "car_c" and r.clips == 1


def test_zero_step_finetune_with_the_default_init_exports_the_pretrained_weights(zs, tmp_path):
    from unified_action.training.finetune import finetune

    result = finetune(TrainConfig.model_validate(zs_job(zs, tmp_path, init="unchanged")), progress=False)
    before, after = load_file(zs["export"] / "model.safetensors"), load_file(result.export / "model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert "carracing_c" in Registry(tmp_path / "tokenizers").names()


def test_refusals_are_one_line_before_any_work(zs, tmp_path, monkeypatch, capsys):
    """shared_slots for an embodiment that shares no slot (Push-T's planar arm); train.steps 0 in a pretraining job."""
    d = zs_job(zs, tmp_path, dataset=zs["pusht"])
    config = write_job(tmp_path / "ft.yaml", d)
    before = tree_digest(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "finetune", "--config", config)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "new_embodiment_init: shared_slots" in err and "'gym_pusht'" in err and "right_arm.eef_pos.x" in err
    assert tree_digest(tmp_path) == before  # nothing registered, nothing written

    pre = job({"registry": str(tmp_path / "tokenizers"), "datasets": [str(zs["new"])]}, tmp_path / "pre", steps=0)
    config = tmp_path / "pre.yaml"
    config.write_text(yaml.safe_dump(pre))
    code, _, err = run_cli(monkeypatch, capsys, "pretrain", "--config", config)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "train.steps: 0" in err, err
    assert not (tmp_path / "pre").exists()


def test_a_training_finetune_starts_from_the_shared_slot_init(zs, tmp_path, capsys):
    """With steps, the init is applied once the pretrained weights are loaded, before the mode: in adapter mode one
    step moves the new row from the donors' mean by at most about the learning rate (here not at all: the export's
    output layer is at its zero initialisation, so no gradient reaches the actions yet), and the run records it."""
    from unified_action.training.finetune import finetune

    d = zs_job(zs, tmp_path)
    d["finetune"]["mode"] = "adapter"
    d["train"].update(steps=1, checkpoint_every=1)
    result = finetune(TrainConfig.model_validate(d), progress=False)
    assert "mean of carracing, carracing_b" in capsys.readouterr().out
    reg = Registry(tmp_path / "tokenizers")
    c, a, b = (reg.spec(n).embodiment_token for n in ("carracing_c", "carracing", "carracing_b"))
    before, after = load_file(zs["export"] / "model.safetensors"), load_file(result.export / "model.safetensors")
    start = (before[TOKEN][a] + before[TOKEN][b]) / 2
    moved = (after[TOKEN][c] - start).abs().max().item()
    assert moved <= 2 * d["optim"]["lr"] and (after[TOKEN][c] - before[TOKEN][c]).abs().max().item() > 4 * d["optim"]["lr"]
    info = json.loads((result.export / "config.json").read_text())["trained"]["run"]["finetune"]
    assert info["shared_slots"]["carracing_c"]["donors"] == ["carracing", "carracing_b"]
