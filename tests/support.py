"""Helpers shared by tests (importable: pyproject puts tests/ on the path)."""

from __future__ import annotations

import hashlib
import sys
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
