"""Writing datasets leaves no debris and deletes nothing it should not: `--overwrite` is checked against the
source first and deletes only a dataset directory of ours; a SIGKILLed `uact data record` takes its workers along."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support import CARDS, ROOT, run_cli, tree_digest

from unified_action.data.convert import SourceSpec, write_dataset

pytestmark = pytest.mark.slow


@pytest.fixture()
def converted(tmp_path):
    from data.lerobot_fixture import write_lerobot_v3

    rng = np.random.default_rng(0)
    eps = [{"frames": rng.integers(0, 255, (n, 16, 16, 3), dtype=np.uint8),
            "action": rng.uniform(-1, 1, (n, 14)).astype(np.float32), "state": rng.uniform(-1, 1, (n, 14)).astype(np.float32),
            "task": "Insert the peg into the socket."} for n in (7, 9)]
    root = write_lerobot_v3(tmp_path / "lerobot", eps, video=False)
    card = tmp_path / "lerobot_aloha_sim_insertion_human.md"
    card.write_text((CARDS / card.name).read_text().replace("height: 480, width: 640", "height: 16, width: 16"))
    write_dataset(SourceSpec(str(card), "lerobot", root=str(root)), tmp_path / "shards", workers=1, progress=False)
    return card, root, tmp_path / "shards"


def test_convert_overwrite_with_a_wrong_source_deletes_nothing(converted, tmp_path, monkeypatch, capsys):
    card, _, out = converted
    before = tree_digest(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "data", "convert", card, "--source", tmp_path / "nope", "-o", out, "--overwrite")
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert tree_digest(tmp_path) == before


def test_convert_overwrite_refuses_a_directory_that_is_not_a_dataset(converted, tmp_path, monkeypatch, capsys):
    card, source, _ = converted
    before = tree_digest(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "data", "convert", card, "--source", source, "-o", tmp_path, "--overwrite")
    assert code == 2 and "--overwrite would delete it" in err  # tmp_path holds the card and the source
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    before = tree_digest(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "data", "convert", card, "--source", source, "-o", other, "--overwrite")
    assert code == 2 and "holds 'notes.txt', which no dataset writes" in err
    assert tree_digest(tmp_path) == before


def _children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_of_record_takes_its_workers_along(tmp_path):
    cmd = [sys.executable, "-m", "unified_action.cli", "data", "record", str(CARDS / "carracing.md"), "-o", str(tmp_path / "out"),
           "-n", "40", "--steps", "400", "-j", "2", "--size", "16"]
    main = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(workers := _children(main.pid)) < 2:
            time.sleep(0.5)
        assert len(workers) >= 2, "the workers did not start"
        time.sleep(3)
        os.kill(main.pid, signal.SIGKILL)
        main.wait()
        deadline = time.time() + 15
        while time.time() < deadline and any(map(_alive, workers)):
            time.sleep(0.2)
        assert not any(map(_alive, workers)), "workers outlived their parent"
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever is left of this test's own process group
            os.killpg(main.pid, signal.SIGKILL)
