"""`uact pretrain` as users run it: real DeepSpeed engines in 1 and 2 real processes, on real shards of two embodiments.

Reliability as the trusted trainers test it (ANCHORS.md): a run stopped and resumed gives losses bit-identical
to one run straight through (CPU fp32); a process SIGKILLed while saving resumes from the previous complete
checkpoint; a non-finite loss on any rank stops every rank before the step; a checkpoint from 2 processes
refuses 1 with the way out; the export carries the tokenizers' hashes and refuses a registry that changed.
"""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from safetensors.torch import load_file

from training.conftest import checkpoints, job, losses, run_pretrain, tensorboard_scalars, write_job
from unified_action.errors import TrainingError
from unified_action.tokenization import Registry

pytestmark = pytest.mark.slow

_straight: dict[int, object] = {}


@pytest.fixture
def straight(mixture, tmp_path_factory):
    """The uninterrupted 6-step run with `nproc` processes (run once per process count, shared by the tests)."""
    def get(nproc: int):
        if nproc not in _straight:
            d = tmp_path_factory.mktemp(f"straight{nproc}")
            r = run_pretrain(write_job(d / "job.yaml", job(mixture, d / "run")), nproc=nproc)
            assert r.returncode == 0, r.stderr[-4000:]
            _straight[nproc] = d / "run"
        return _straight[nproc]
    return get


def test_one_process_trains_checkpoints_logs_and_exports(straight, mixture):
    run = straight(1)
    steps = losses(run)
    assert [s for s, _ in steps] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(v) for _, v in steps)
    assert checkpoints(run) == ["step_00000003", "step_00000006"]  # keep_checkpoints 2
    scalars = tensorboard_scalars(run / "tensorboard")
    assert {"train/loss", "train/lr", "perf/clips_per_s", "loss/carracing", "loss/ale_pong"} <= scalars.keys()
    assert [s for s, _ in scalars["train/loss"]] == [2, 4, 6]
    export = run / "export"
    assert {p.name for p in export.iterdir()} == {"model.safetensors", "config.json", "README.md"}
    reg = Registry(mixture["registry"])
    from unified_action.training.export import read_export

    config, _ = read_export(export)
    assert config["tokenizers"] == {n: reg.content_hash(n) for n in ("ale_pong", "carracing")}
    assert "ale_pong" in (export / "README.md").read_text()


@pytest.mark.parametrize("nproc", [1, 2])
def test_stop_and_resume_gives_bit_identical_losses(straight, mixture, tmp_path, nproc):
    ref = straight(nproc)
    cfg = write_job(tmp_path / "job.yaml", job(mixture, tmp_path / "run"))
    first = run_pretrain(cfg, "--stop-at", 3, nproc=nproc)
    assert first.returncode == 0, first.stderr[-4000:]
    assert [s for s, _ in losses(tmp_path / "run")] == [1, 2, 3]
    second = run_pretrain(cfg, nproc=nproc)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "resumed from" in second.stderr + second.stdout
    assert losses(tmp_path / "run") == losses(ref)  # every float equal, not close
    a, b = load_file(tmp_path / "run/export/model.safetensors"), load_file(ref / "export/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sigkill_while_saving_resumes_from_the_previous_complete_checkpoint(straight, mixture, tmp_path):
    cfg = write_job(tmp_path / "job.yaml", job(mixture, tmp_path / "run"))
    killed = run_pretrain(cfg, fault="kill_in_save@6")
    assert killed.returncode == -9, killed.stderr[-4000:]
    assert checkpoints(tmp_path / "run") == ["step_00000003", "step_00000006.tmp"]
    resumed = run_pretrain(cfg)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed from" in resumed.stderr + resumed.stdout and "step_00000003" in resumed.stderr + resumed.stdout
    assert checkpoints(tmp_path / "run") == ["step_00000003", "step_00000006"]
    assert losses(tmp_path / "run") == losses(straight(1))


def test_nan_on_one_rank_stops_every_rank_before_the_step(mixture, tmp_path):
    cfg = write_job(tmp_path / "job.yaml", job(mixture, tmp_path / "run", checkpoint_every=1))
    r = run_pretrain(cfg, fault="nan@2:1", nproc=2)
    assert r.returncode != 0
    assert r.stderr.count("step 2: non-finite loss on rank(s) [1]") == 2, r.stderr[-4000:]  # both ranks say so
    assert checkpoints(tmp_path / "run") == ["step_00000001"]
    assert [s for s, _ in losses(tmp_path / "run")] == [1]


def test_nan_leaves_weights_and_optimizer_untouched(mixture, tmp_path, monkeypatch):
    """In this process: the engine's parameters and Adam moments after the refused step equal those before it."""
    from unified_action.training.config import TrainConfig
    from unified_action.training.trainer import Trainer

    monkeypatch.setenv("UACT_FAULT", "nan@2")
    t = Trainer(TrainConfig.model_validate(job(mixture, tmp_path / "run", checkpoint_every=1)))
    t.train_step()
    t.save()
    before = {k: v.detach().clone() for k, v in t.engine.module.state_dict().items()}
    opt_before = [{k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for s in t.optimizer.optimizer.state.values()]
    with pytest.raises(TrainingError, match=r"step 2: non-finite loss on rank\(s\) \[0\].*weights are as after step 1"):
        t.train_step()
    after = t.engine.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    opt_after = [{k: v for k, v in s.items() if torch.is_tensor(v)} for s in t.optimizer.optimizer.state.values()]
    assert len(opt_before) == len(opt_after) > 0
    assert all(torch.equal(a[k], b[k]) for a, b in zip(opt_before, opt_after) for k in a)
    assert checkpoints(tmp_path / "run") == ["step_00000001"]


def test_other_process_count_is_refused_with_the_way_out(straight, mixture, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight(2), run)
    cfg = write_job(tmp_path / "job.yaml", job(mixture, run, steps=8))
    r = run_pretrain(cfg, nproc=1)
    assert r.returncode == 2
    assert "saved by 2 processes, this run has 1" in r.stderr and "--nproc 2" in r.stderr and "uact export" in r.stderr


def test_export_round_trip_and_changed_tokenizer_refused(straight, mixture, tmp_path):
    from unified_action.training.export import consolidated_state_dict, load_pretrained

    run = straight(2)  # weights gathered from two ZeRO partitions
    model, config = load_pretrained(run / "export", mixture["registry"])
    ref = consolidated_state_dict(run / "checkpoints/step_00000006")
    got = model.state_dict()
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    assert config["trained"]["step"] == 6

    # re-register Pong from fewer episodes: other statistics, another content hash
    reg_dir = tmp_path / "tokenizers"
    shutil.copytree(mixture["registry"], reg_dir)
    from unified_action.data.dataset import open_dataset

    pong = open_dataset(mixture["datasets"][1])
    Registry(reg_dir).register(pong.card, list(pong.iter_actions())[:2], force=True)
    with pytest.raises(TrainingError, match=r"tokenizer 'ale_pong' in .* has hash [0-9a-f]{12}, the model was trained with"):
        load_pretrained(run / "export", reg_dir)
