"""`uact eval`: evaluate an exported world model on held-out clips; tables here, pictures in a report directory."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from unified_action.cli.tokenizer import RegistryOpt
from unified_action.console import make_console
from unified_action.errors import UnifiedActionError


def parse_episodes(text: str | None) -> tuple[int, int] | None:
    """'lo:hi' -> (lo, hi), episodes [lo, hi) in manifest order; None -> each dataset's default held-out split."""
    if text is None:
        return None
    lo, sep, hi = text.partition(":")
    try:
        if not sep:
            raise ValueError
        rng = int(lo), int(hi)
    except ValueError:
        raise UnifiedActionError(f"--episodes: expected 'lo:hi' (episodes lo..hi-1 in manifest order), got '{text}'") from None
    if not 0 <= rng[0] < rng[1]:
        raise UnifiedActionError(f"--episodes: expected 0 <= lo < hi, got '{text}'")
    return rng


def evaluate(
    model: Path = typer.Option(..., "--model", "-m", help="An export directory (uact export): model.safetensors + config.json."),
    data: list[Path] = typer.Option(..., "--data", "-d", help="A shard dataset of an embodiment the model knows (repeatable)."),
    registry: Path = RegistryOpt,
    tokenizer: str = typer.Option(None, "--tokenizer", help="Encode every dataset's actions with this registered "
                                  "tokenizer the model knows, not the dataset's own; refused unless its card maps the "
                                  "same native actions onto the same slots (zero-shot probe of a held-out embodiment)."),
    episodes: str = typer.Option(None, "--episodes", help="Held-out episodes 'lo:hi' [default: the last 20% of each dataset]."),
    context: int = typer.Option(2, "--context", min=1, help="Real frames given to the model."),
    horizon: int = typer.Option(6, "--horizon", min=1, help="Frames generated open-loop (may exceed the model's window)."),
    clips: int = typer.Option(16, "--clips", min=1, help="Clips per embodiment at most."),
    steps: int = typer.Option(1, "--steps", min=1, help="Euler sampling steps per frame (1: the conditional mean)."),
    guidance: float = typer.Option(1.0, "--guidance", min=0.0, help="Classifier-free guidance over actions (1: none)."),
    min_change: float = typer.Option(3.0, "--min-change", min=0.0,
                                     help="Predicted changes of fewer grey levels are dropped (0: keep all)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the clip order and the sampling noise."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
    out: Path = typer.Option(Path("runs/eval"), "--out", "-o", help="Report directory: new, empty or an earlier report (replaced whole)."),
) -> None:
    """Open-loop rollouts on held-out clips: PSNR, SSIM, copy-last baseline, controllability; report.html."""
    from unified_action.evaluation import evaluate as run
    from unified_action.evaluation import write_report
    from unified_action.evaluation.report import REPORT, table_header, table_rows
    from unified_action.outputs import check_output
    from unified_action.tokenization.registry import default_registry_path

    check_output(out, REPORT, [model, registry or default_registry_path(), *data])  # before the rollouts, not after
    result = run(model, registry, data, episodes=parse_episodes(episodes), context_frames=context, horizon=horizon,
                 clips=clips, steps=steps, guidance=guidance, min_change=min_change, seed=seed, device=device,
                 tokenizer=tokenizer)
    report = write_report(result, out)
    console = make_console()
    for r in result.datasets:
        through = f" through tokenizer '{r.tokenizer}'" if r.tokenizer and r.tokenizer != r.name else ""
        table = Table(title=f"{r.name} ({r.embodiment}{through}): {r.clips} clips of episodes [{r.episodes[0]}, {r.episodes[1]})")
        for col in table_header():
            table.add_column(col, justify="right")
        for row in table_rows(r):
            table.add_row(*row)
        console.print(table)
        for note in r.notes:
            console.print(f"note: {note}")
    console.print(f"report: {report}")
