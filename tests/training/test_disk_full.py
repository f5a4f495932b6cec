"""`uact export` and `uact pretrain` onto a full disk (a real small tmpfs): one line naming the device and the file,
no `.tmp` left, and the same command runs once there is space again."""

from __future__ import annotations

import subprocess

import pytest
import torch
from safetensors.torch import load_file

from training.conftest import job, run_pretrain, write_job
from unified_action.errors import DiskFullError
from unified_action.training.export import write_export

META = {"format_version": 1, "vocab_version": 1, "vocab_size": 10, "embodiments": {"carracing": 3},
        "tokenizers": {"carracing": "0" * 64},
        "model": {"size": "tiny", "image_size": [32, 32], "max_frames": 4, "context_frames": 2}}


def test_export_onto_a_full_disk_is_one_line_and_leaves_no_tmp(small_disk):
    state = {"w": torch.arange(600_000, dtype=torch.float32)}  # 2.4 MB of weights on a 1 MiB disk
    with pytest.raises(DiskFullError) as e:
        write_export(state, META, small_disk / "exp", {"step": 6, "run": {}})
    assert str(e.value).startswith(f"no space left on {small_disk} while writing {small_disk / 'exp'}")
    assert "\n" not in str(e.value)
    assert list(small_disk.iterdir()) == []  # exp.tmp is gone, its blocks with it
    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)
    out = write_export(state, META, small_disk / "exp", {"step": 6, "run": {}})
    assert torch.equal(load_file(out / "model.safetensors")["w"], state["w"])


@pytest.mark.slow
def test_pretrain_onto_a_full_disk_is_one_line_and_leaves_no_half_checkpoint(small_disk, mixture, tmp_path):
    """`uact pretrain` as a user runs it, its run directory on a disk too small for a checkpoint: exit 2, one line
    naming the device and the checkpoint, no traceback, no `step_*.tmp` left; with space again it runs to the end."""
    cfg = write_job(tmp_path / "job.yaml", job(mixture, small_disk / "run", steps=2, checkpoint_every=1))
    r = run_pretrain(cfg)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(lines) == 1 and f"no space left on {small_disk} while writing {small_disk / 'run'}" in lines[0], lines
    assert not list(small_disk.rglob("*.tmp")) and not list(small_disk.rglob("step_*"))
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)], check=True)
    r = run_pretrain(cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (small_disk / "run" / "export" / "model.safetensors").is_file()
