"""`uact demo`: the main job on embedded defaults."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Where everything is written (stages are reused)."),
    cards: Path = typer.Option(Path("data_cards"), "--cards", help="Directory of data cards."),
) -> None:
    """Record from real simulators, register tokenizers into one vocabulary, report the round trip."""
    from unified_action.demo import run_demo

    run_demo(out, cards)
