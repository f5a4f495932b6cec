"""`uact finetune` on a new embodiment: real DeepSpeed, a real pretrained export, real shards of a robot it never saw.

The "pretrained" model is a 2-step `uact pretrain` of the CarRacing + Pong mixture; the new robot is Push-T
(3 recorded episodes, K=2 of them used). Each mode must train exactly its parameters (checked on the exports,
bit for bit), registration must keep every existing id and hash, and the Trainer's guarantees (exact resume,
NaN refusal, refusal of a changed tokenizer) must hold with the adapters in place.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from data.conftest import record
from safetensors.torch import load_file
from support import ROOT

from training.conftest import PRETRAIN_TIMEOUT, checkpoints, job, losses, run_pretrain, write_job
from unified_action.data.dataset import open_dataset
from unified_action.models.world_model import Conditioning
from unified_action.tokenization import Registry
from unified_action.training.config import TrainConfig

pytestmark = pytest.mark.slow

K = 2


# the parameters of the model spec's action_path (world_model.py), which train whole in lora mode; the history's
# learned start is not among them (a clip's first chunk, the same for every embodiment)
ACTION_PATH = ("actions.", "action_tokens.", "action_vector.", "cond_in.", "field_", "history_tokens.", "history_vector.")


@pytest.fixture(scope="module")
def pretrained(mixture, tmp_path_factory):
    """A 2-step pretraining export of the mixture (its own registry copy) and 3 recorded Push-T episodes."""
    root = tmp_path_factory.mktemp("finetune")
    reg = root / "tokenizers"
    shutil.copytree(mixture["registry"], reg)  # fine-tuning registers into it: keep the session's mixture intact
    r = run_pretrain(write_job(root / "pre.yaml", job({**mixture, "registry": str(reg)}, root / "pre", steps=2)))
    assert r.returncode == 0, r.stderr[-4000:]
    pusht = record(root / "gym_pusht", "gym_pusht", episodes=3, steps=40, seed=7, shard_kb=60)
    return {"export": root / "pre/export", "registry": reg, "new": pusht.root}


def ft_job(pre: dict, tmp: Path, mode: str = "lora", **train) -> dict:
    """A fine-tuning job on Push-T's first K episodes, with its own copy of the pretraining registry."""
    reg = tmp / "tokenizers"
    if not reg.exists():
        shutil.copytree(pre["registry"], reg)
    return {
        "name": "ft", "out": str(tmp / "run"),
        "model": {"size": "tiny", "overrides": {"depth": 1}},
        "finetune": {"init_from": str(pre["export"]), "mode": mode, "lora_rank": 4, "episodes": K},
        "data": {"registry": str(reg), "datasets": [{"path": str(pre["new"])}], "context_frames": 2, "future_frames": 2,
                 "image_size": [32, 32], "num_workers": 0},
        "optim": {"lr": 2e-3, "warmup_steps": 1},
        "train": {"steps": 3, "micro_batch": 2, "deepspeed": str(ROOT / "pretrain/ds/zero1.json"), "checkpoint_every": 1,
                  "keep_checkpoints": 3, "log_every": 1, "precision": "fp32", **train},
    }


def run_finetune(config: Path, *args, fault: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["UACT_FAULT"] = fault
    cmd = [sys.executable, "-m", "unified_action.cli", "finetune", "--config", str(config), *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=PRETRAIN_TIMEOUT, cwd=ROOT)


def trained_keys(mode: str, key: str) -> bool:
    """Whether `key` of a WorldModel state dict may change in `mode` (the table rows are checked separately)."""
    ada = ".ada." in key
    if mode == "adapter":
        return ada or key in ("actions.token.weight", "actions.slot.weight")
    lora = key.startswith("blocks.") and key.endswith(".weight") and any(
        f".{m}." in key for m in ("spatial.qkv", "spatial.proj", "temporal.qkv", "temporal.proj", "mlp.0", "mlp.2"))
    return ada or lora or key.startswith(ACTION_PATH)


@pytest.mark.parametrize("mode", ["lora", "adapter", "full"])
def test_each_mode_trains_exactly_its_parameters(pretrained, tmp_path, mode):
    from unified_action.training.export import load_pretrained
    from unified_action.training.finetune import finetune

    result = finetune(TrainConfig.model_validate(ft_job(pretrained, tmp_path, mode)), progress=False)
    assert result.step == 3 and result.export is not None
    before, after = load_file(pretrained["export"] / "model.safetensors"), load_file(result.export / "model.safetensors")
    assert before.keys() == after.keys()  # a plain WorldModel: LoRA merged, no adapter keys

    reg = Registry(tmp_path / "tokenizers")
    new = reg.spec("gym_pusht")
    old_rows = before["actions.token.weight"].shape[0]
    token_b, token_a = before["actions.token.weight"], after["actions.token.weight"][:old_rows]
    if mode == "full":
        changed = [k for k in before if not torch.equal(before[k], after[k])]
        assert {"patch_in.weight", "ae.encoder.0.weight", "blocks.0.spatial.qkv.weight"} & set(changed)
        assert "blocks.0.spatial.qkv.weight" in changed and "blocks.0.ada.weight" in changed
    else:
        for k in before:
            if k.startswith(("actions.token.", "actions.slot.")) and mode == "adapter":
                continue
            if trained_keys(mode, k):
                assert not torch.equal(before[k], after[k]), f"{mode}: {k} did not train"
            else:
                assert torch.equal(before[k], after[k]), f"{mode}: {k} is frozen but changed"
    if mode == "adapter":  # only the new embodiment's own rows moved; every pretrained row is bit-equal
        own = [new.embodiment_token] + (list(range(new.bpe_start, new.bpe_start + new.bpe_size)) if new.bpe_start else [])
        moved = {i for i in range(old_rows) if not torch.equal(token_b[i], token_a[i])}
        assert moved == {new.embodiment_token} & set(range(old_rows))
        assert all(torch.equal(token_b[i], token_a[i]) for i in range(old_rows) if i not in own)
        new_slots = {s + 1 for s in new.slot_ids} - {s + 1 for n in ("carracing", "ale_pong") for s in reg.spec(n).slot_ids}
        slot_b, slot_a = before["actions.slot.weight"], after["actions.slot.weight"]
        # a `fast` tokenizer's BPE pieces carry no slot (row 0), so its new slot rows may stay as they were
        assert {i for i in range(slot_b.shape[0]) if not torch.equal(slot_b[i], slot_a[i])} <= new_slots

    model, config = load_pretrained(result.export, reg)
    assert config["embodiments"]["gym_pusht"] == new.embodiment_token
    assert config["tokenizers"] == {n: reg.content_hash(n) for n in ("ale_pong", "carracing", "gym_pusht")}
    assert config["trained"]["run"]["finetune"]["mode"] == mode
    assert model.cfg.vocab_size == reg.vocabulary().size


def test_reset_output_starts_the_fine_tune_at_copy_last_and_trains_the_head_in_every_mode(pretrained, tmp_path):
    """finetune.reset_output: the pretrained head is zeroed (the model predicts no change, as an untrained one), and
    in lora mode, which freezes it otherwise, it trains from there."""
    from unified_action.models import WorldModel, model_config
    from unified_action.training.finetune import adapt_model, finetune, reset_output

    model = WorldModel(model_config("tiny", depth=1, image_size=(32, 32)))
    for p in model.final.parameters():  # a trained head
        torch.nn.init.normal_(p)
    adapt_model(model, "lora", token_rows=set(), slot_rows=set(), rank=4, alpha=8)
    assert not model.final.linear.weight.requires_grad
    newly = reset_output(model)
    assert newly == sum(p.numel() for p in model.final.linear.parameters())
    assert model.final.linear.weight.requires_grad and not model.final.linear.weight.any()
    assert not any(p.any() for p in model.final.parameters())  # its modulation too: the layer as initialised

    job = ft_job(pretrained, tmp_path, "lora")
    job["finetune"]["reset_output"] = True
    result = finetune(TrainConfig.model_validate(job), progress=False)
    before, after = load_file(pretrained["export"] / "model.safetensors"), load_file(result.export / "model.safetensors")
    w = after["final.linear.weight"]
    assert w.any() and not torch.equal(w, before["final.linear.weight"])
    # 3 steps from zero: small next to the pretrained head (it was zeroed, not fine-tuned from where it was)
    assert (w - before["final.linear.weight"]).norm() > 0.5 * before["final.linear.weight"].norm()
    assert json.loads((result.export / "config.json").read_text())["trained"]["run"]["finetune"]["reset_output"] is True


def test_lora_starts_as_the_base_model_and_merges_into_it(pretrained):
    from unified_action.models.lora import LoRALinear, merge_lora
    from unified_action.training.export import load_pretrained
    from unified_action.training.finetune import adapt_model

    base, _ = load_pretrained(pretrained["export"], check=False)
    lora = copy.deepcopy(base)
    adapt_model(lora, "lora", token_rows=set(), slot_rows=set(), rank=4, alpha=8)
    assert sum(isinstance(m, LoRALinear) for m in lora.modules()) == 6 * base.cfg.depth
    g = torch.Generator().manual_seed(0)
    cfg = base.cfg
    prev = torch.rand(2, 4, 3, *cfg.image_size, generator=g) * 2 - 1
    x = torch.randn(2, 4, 3, *cfg.image_size, generator=g)
    t = torch.rand(2, 4, generator=g)
    W, Q = cfg.width, cfg.action_queries
    cond = Conditioning(torch.randn(2, 4, W, generator=g), torch.randn(2, 4, Q, W, generator=g))
    with torch.no_grad():
        ref = base.denoise(prev, x, t, cond)[0]
        assert torch.equal(lora.denoise(prev, x, t, cond)[0], ref)  # B = 0: bit-equal at step 0
        for m in lora.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(std=0.5, generator=g)
        tuned = lora.denoise(prev, x, t, cond)[0]
        merged = copy.deepcopy(base)
        merged.load_state_dict(merge_lora(lora.state_dict(), 8 / 4), strict=True)
        moved = (tuned - ref).abs().max()  # small: a 2-step pretrained model's adaLN gates are still near zero
        assert moved > 0 and (merged.denoise(prev, x, t, cond)[0] - tuned).abs().max() < 1e-3 * moved
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert {n.rsplit(".", 1)[-1] for n in trainable} >= {"lora_A", "lora_B"}
    assert all(n.endswith(("lora_A", "lora_B")) or ".ada." in n
               or n.startswith(ACTION_PATH) for n in trainable)


def test_registration_from_the_first_k_episodes_keeps_existing_ids(pretrained, tmp_path):
    from unified_action.training.finetune import finetune_trainer

    cfg = TrainConfig.model_validate(ft_job(pretrained, tmp_path))
    reg = Registry(cfg.data.registry)
    old = {n: (reg.content_hash(n), reg.spec(n).embodiment_token) for n in reg.names()}
    trainer = finetune_trainer(cfg)
    assert {n: (reg.content_hash(n), reg.spec(n).embodiment_token) for n in old} == old
    assert set(reg.names()) == set(old) | {"gym_pusht"}

    # the tokenizer is the one `Registry.register` fits on exactly the first K episodes' actions
    ds = open_dataset(pretrained["new"])
    ref = tmp_path / "ref"
    shutil.copytree(pretrained["registry"], ref)
    Registry(ref).register(ds.card, list(ds.iter_actions())[:K])
    assert reg.content_hash("gym_pusht") == Registry(ref).content_hash("gym_pusht")

    # the loader reads clips of episodes 0..K-1 only
    names = [e for s in ds.shards for e in s.episodes]
    seen = {int(k.split("/")[1].split("@")[0]) for batch in trainer.loader for k in batch["key"]}
    assert seen == set(names[:K])


def test_lora_stop_and_resume_gives_bit_identical_losses(pretrained, tmp_path):
    from unified_action.training.finetune import finetune

    straight = TrainConfig.model_validate(ft_job(pretrained, tmp_path / "a", steps=4, checkpoint_every=2))
    finetune(straight, progress=False)
    cfg = TrainConfig.model_validate(ft_job(pretrained, tmp_path / "b", steps=4, checkpoint_every=2))
    first = finetune(cfg, stop_at=2, progress=False)
    assert first.step == 2 and first.export is None
    second = finetune(cfg, progress=False)
    assert second.resumed_from == 2 and second.step == 4
    assert losses(tmp_path / "b/run") == losses(tmp_path / "a/run")  # every float equal
    a, b = load_file(tmp_path / "a/run/export/model.safetensors"), load_file(tmp_path / "b/run/export/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_nan_stops_cleanly_keeping_checkpoints(pretrained, tmp_path):
    cfg = write_job(tmp_path / "ft.yaml", ft_job(pretrained, tmp_path))
    r = run_finetune(cfg, fault="nan@2")
    assert r.returncode == 2, r.stderr[-4000:]
    assert "finetune lora:" in r.stdout and "parameters train" in r.stdout
    assert "error: step 2: non-finite loss on rank(s) [0]" in r.stderr
    assert checkpoints(tmp_path / "run") == ["step_00000001"]
    assert [s for s, _ in losses(tmp_path / "run")] == [1]


def test_cli_refuses_a_registry_whose_pretrained_tokenizer_changed(pretrained, mixture, tmp_path):
    job_ = ft_job(pretrained, tmp_path)
    pong = open_dataset(mixture["datasets"][1])
    Registry(job_["data"]["registry"]).register(pong.card, list(pong.iter_actions())[:2], force=True)  # another hash
    r = run_finetune(write_job(tmp_path / "ft.yaml", job_))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "tokenizer 'ale_pong'" in lines[0], r.stderr[-2000:]
    assert "has hash" in lines[0] and not (tmp_path / "run").exists()
