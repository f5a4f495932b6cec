"""`uact finetune`: few-shot fine-tuning of a pretrained export on a new embodiment (training/finetune.py)."""

from __future__ import annotations

import typer

from unified_action.cli.pretrain import NprocOpt, OverwriteOpt, ResumeOpt, StopAtOpt, relaunch_if_asked, report


def finetune(
    config: str = typer.Option(..., "--config", "-c", help="A named config in finetune/configs/ (e.g. tiny_metaworld) or a YAML path."),
    set_: list[str] = typer.Option([], "--set", help="Override a field, e.g. --set finetune.mode=adapter (repeatable)."),
    nproc: int = NprocOpt,
    resume: bool = ResumeOpt,
    overwrite: bool = OverwriteOpt,
    stop_at: int = StopAtOpt,
) -> None:
    """Fine-tune a pretrained export on new data: registers new tokenizers from the first K episodes, trains (full, lora
    or adapter), exports a plain model."""
    relaunch_if_asked(nproc)
    from unified_action.training.config import FINETUNE_CONFIG_DIR, load_config, resolve_config_path
    from unified_action.training.finetune import finetune as run

    cfg = load_config(config, set_, config_dir=FINETUNE_CONFIG_DIR)
    result = run(cfg, config_path=str(resolve_config_path(config, FINETUNE_CONFIG_DIR)), resume=resume, overwrite=overwrite,
                 stop_at=stop_at)
    report(result)
