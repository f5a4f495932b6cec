"""Failing environments give one line and leave nothing holding space: `uact data record` onto a full disk (a real
small tmpfs), two records into one output at once, a broken shard read by the loader's worker processes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support import CARDS, ROOT, tree_digest

from unified_action.data.loader import ClipLoader, LoaderConfig, MixtureEntry
from unified_action.errors import DataError

pytestmark = pytest.mark.slow


def record_cmd(out: Path, *extra: str) -> list[str]:
    """A CarRacing record whose shards (~2.5 MiB) do not fit the small disk."""
    return [sys.executable, "-m", "unified_action.cli", "data", "record", str(CARDS / "carracing.md"), "-o", str(out),
            "-n", "8", "--steps", "200", "--size", "64", "--shard-mb", "1", "-j", "2", *extra]


def run_record(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(record_cmd(out), cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_record_onto_a_full_disk_says_so_once_and_leaves_no_temporaries(small_disk):
    r = run_record(small_disk / "out")
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if "no space left on" in ln]
    assert len(lines) == 1, r.stderr[-3000:]
    assert f"no space left on {small_disk} while writing {small_disk / 'out'}" in lines[0]
    assert "Traceback" not in r.stderr
    assert not list(small_disk.rglob("*.tmp"))
    # with space freed, the same command finishes the dataset exactly as a run that never ran out
    subprocess.run(["mount", "-o", "remount,size=20m", str(small_disk)], check=True)
    again = run_record(small_disk / "out")
    assert again.returncode == 0, again.stderr[-3000:]
    ref = run_record(small_disk.parent / "ref")
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert tree_digest(small_disk / "out") == tree_digest(small_disk.parent / "ref")


def test_a_second_record_into_the_same_output_is_refused(tmp_path):
    out = tmp_path / "out"
    first = subprocess.Popen(record_cmd(out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "progress" / "plan.json").exists():  # written under the lock
            time.sleep(0.1)
        second = subprocess.run(record_cmd(out), cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert first.poll() is None, "the first record ended before the second started: make it longer"
        assert second.returncode == 2, second.stderr[-3000:]
        assert "Traceback" not in second.stderr
        err = [ln for ln in second.stderr.splitlines() if ln.strip()]
        assert len(err) == 1 and "another command is writing this dataset now" in err[0], second.stderr[-3000:]
        assert first.wait(timeout=300) == 0, first.stderr.read()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    verify = subprocess.run([sys.executable, "-m", "unified_action.cli", "data", "verify", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stderr[-3000:]
    assert not list(out.rglob("*.tmp"))


def test_a_broken_shard_in_a_loader_worker_is_one_line(shard_data, tmp_path):
    dst = tmp_path / "carracing"
    shutil.copytree(shard_data["carracing"].root, dst)
    for shard in shard_data["carracing"].shards:  # every shard, so whichever worker reads first fails
        (dst / shard.name).write_bytes(np.random.default_rng(0).bytes(5000))
    cfg = LoaderConfig(datasets=(MixtureEntry(str(dst)),), registry=str(shard_data["registry"].root), batch_size=2,
                       context_frames=1, future_frames=2, image_size=(32, 32))
    loader = ClipLoader(cfg, rank=0, world_size=1, num_workers=2)
    with pytest.raises(DataError) as e:
        list(loader)
    msg = str(e.value)
    assert "not a readable tar shard" in msg and str(dst) in msg
    assert "\n" not in msg and "Caught DataError" not in msg and "Traceback" not in msg
    loader.close()
