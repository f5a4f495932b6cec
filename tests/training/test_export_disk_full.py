"""An export onto a full disk (a real small tmpfs): one line naming the device and the file, no `.tmp` left."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unified_action.errors import DiskFullError
from unified_action.training.export import write_export

META = {"format_version": 1, "vocab_version": 1, "vocab_size": 10, "embodiments": {"carracing": 3},
        "tokenizers": {"carracing": "0" * 64},
        "model": {"size": "tiny", "image_size": [32, 32], "max_frames": 4, "context_frames": 2}}


@pytest.fixture()
def small_disk(tmp_path) -> Iterator[Path]:
    """A real 1 MiB tmpfs under tmp_path, always unmounted (mounting needs root, as CI runs)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


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
