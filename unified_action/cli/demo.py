"""`uact demo`: the main job on embedded defaults."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Where everything is written (stages are reused)."),
    cards: Path = typer.Option(Path("data_cards"), "--cards", help="Directory of data cards."),
    clip_stride: int = typer.Option(None, "--clip-stride", min=1, help="Environment steps between the starts of two "
                                    "clips of an episode, in every job [default: half a clip's span]."),
) -> None:
    """Record a robot, a game and a vehicle, pretrain `tiny`, fine-tune few-shot on a held-out robot, write the report."""
    from unified_action.demo import DemoPlan, run_demo

    run_demo(out, cards, DemoPlan(clip_stride=clip_stride))
