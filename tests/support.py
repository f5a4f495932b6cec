"""Helpers shared by tests (importable: pyproject puts tests/ on the path)."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "data_cards"


def unified_chunks(tok, episodes, stride=None) -> np.ndarray:
    from unified_action.tokenization.fitting import chunks_of

    return chunks_of([tok.card.mapping.to_unified(e)[0] for e in episodes], tok.horizon, stride or tok.horizon)


def run_cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """`uact ARGS` through the console entry point in this process -> (exit code, stdout, stderr)."""
    from unified_action import cli

    monkeypatch.setattr(sys, "argv", ["uact", *map(str, args)])
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def tree_digest(root: Path) -> dict[str, str]:
    """Every path under `root` with its file's sha256 ("dir" for a directory): equal before and after a command
    proves it deleted, changed and added nothing there."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


# Defined in the child before the code of `run_bounded`: a hostile read is run only after `bound()`.
_BOUND = '''
import re as _re, resource as _resource
def bound():
    """From here on, the address space may grow by BUDGET bytes at most: past it an allocation raises MemoryError."""
    vm = int(_re.search(r"VmSize:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
    hard = _resource.getrlimit(_resource.RLIMIT_AS)[1]
    soft = vm + BUDGET if hard == _resource.RLIM_INFINITY else min(vm + BUDGET, hard)
    _resource.setrlimit(_resource.RLIMIT_AS, (soft, hard))
'''


def run_bounded(code: str, budget: int, *args, timeout: float = 120):
    """`python -c code ARGS` in a child whose memory may grow by `budget` bytes once `code` calls `bound()` (after its
    imports): a read that would exhaust the machine fails there with a MemoryError instead. One thread and one
    malloc arena, so no thread's reserved arena counts against the budget."""
    import os
    import subprocess

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
               MALLOC_ARENA_MAX="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", f"BUDGET = {int(budget)}\n{_BOUND}\n{code}", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@contextmanager
def small_tmpfs(where: Path, size: str = "1m") -> Iterator[Path]:
    """A real tmpfs of `size` mounted at `where` (created), always unmounted: a full disk without filling the
    machine's. Mounting needs root, as CI runs; elsewhere the test is skipped, saying why."""
    import subprocess

    import pytest

    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def twin_card(directory: Path, base: str, name: str, embodiment: str) -> Path:
    """data_cards/<base>.md as another embodiment's card, `directory`/<name>.md: the same source and action mapping
    (the same slots, native layout and simulator) under another name and embodiment, as two robot arms whose cards
    map the same OSC actions onto the same `right_arm.*` slots."""
    import re

    text = (CARDS / f"{base}.md").read_text()
    text = re.sub(r"^name: .*$", f"name: {name}", text, count=1, flags=re.M)
    text = re.sub(r"^embodiment: .*$", f"embodiment: {embodiment}", text, count=1, flags=re.M)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.md"
    path.write_text(text)
    return path
