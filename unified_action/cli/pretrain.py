"""`uact pretrain` and `uact export`: train the world model with DeepSpeed, export its weights."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

# Run control shared by `uact pretrain` and `uact finetune`: the same flags mean the same thing in both.
NprocOpt = typer.Option(1, "--nproc", min=1, help="Processes on this machine (torchrun). Multi-node: pretrain/launch_multinode.sh.")
ResumeOpt = typer.Option(True, "--resume/--no-resume", help="Continue from the latest complete checkpoint in the run directory.")
OverwriteOpt = typer.Option(False, "--overwrite", help="Delete the run directory first.")
StopAtOpt = typer.Option(None, "--stop-at", min=1, help="Checkpoint and stop after this step (the schedule keeps the full length).")


def pretrain(
    config: str = typer.Option(..., "--config", "-c", help="A named config in pretrain/configs/ (e.g. tiny) or a YAML path."),
    set_: list[str] = typer.Option([], "--set", help="Override a field, e.g. --set train.steps=20 (repeatable)."),
    nproc: int = NprocOpt,
    resume: bool = ResumeOpt,
    overwrite: bool = OverwriteOpt,
    stop_at: int = StopAtOpt,
    init_from: Path = typer.Option(None, "--init-from", help="Start from exported weights (uact export) instead of random ones."),
) -> None:
    """Pretrain the world model on the config's shard mixture: checkpoints, TensorBoard, export at the end."""
    relaunch_if_asked(nproc)
    from unified_action.training.config import load_config, resolve_config_path
    from unified_action.training.trainer import pretrain as run

    cfg = load_config(config, set_)
    result = run(cfg, config_path=str(resolve_config_path(config)), resume=resume, overwrite=overwrite, stop_at=stop_at,
                 init_from=str(init_from) if init_from else None)
    report(result)


def relaunch_if_asked(nproc: int) -> None:
    """--nproc N > 1 from a plain shell: rerun this very command under torchrun (less --nproc) and exit with its code."""
    if nproc > 1 and "RANK" not in os.environ:
        argv = sys.argv[1:]
        i = next(k for k, a in enumerate(argv) if a == "--nproc" or a.startswith("--nproc="))
        del argv[i:i + (1 if "=" in argv[i] else 2)]
        from unified_action.training.distributed import relaunch

        raise typer.Exit(relaunch(nproc, argv))


def report(result) -> None:
    """Rank 0's last line of a training command."""
    if int(os.environ.get("RANK", 0)) == 0:
        typer.echo(f"{result.out}: step {result.step}, loss {result.last_loss:.4f}"
                   + (f", exported to {result.export}" if result.export else ""))


def export(
    checkpoint: Path = typer.Argument(..., help="A run directory (its latest complete checkpoint) or a checkpoint directory."),
    out: Path = typer.Option(None, "--out", "-o", help="Export directory (default: <run>/export)."),
) -> None:
    """Consolidate a checkpoint into model.safetensors + config.json + a model card."""
    from unified_action.training.export import export_checkpoint

    if out is None:
        run = checkpoint if (checkpoint / "checkpoints").is_dir() else checkpoint.parent.parent
        out = run / "export"
    typer.echo(str(export_checkpoint(checkpoint, out)))
