"""`uact play`: drive an exported world model from a browser (unified_action/play/)."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from unified_action.cli.tokenizer import RegistryOpt
from unified_action.console import make_console
from unified_action.errors import UnifiedActionError

DEMO = Path("runs/demo")  # where `uact demo` leaves its export, registry and datasets (unified_action/demo.py)


def default_data(model: Path) -> list[Path]:
    """After `uact demo`: its datasets (runs/demo/data/<card>) beside the export's run directory."""
    for root in (model.parent.parent / "data", DEMO / "data"):
        if root.is_dir():
            found = sorted(p for p in root.iterdir() if (p / "manifest.json").is_file())
            if found:
                return found
    return []


def play(
    model: Path = typer.Option(DEMO / "pretrain" / "export", "--model", "-m",
                               help="An export directory (uact export) [default: the demo's pretrained model]."),
    registry: Path = RegistryOpt,
    data: list[Path] = typer.Option(None, "--data", "-d", help="A shard dataset to start episodes from (repeatable) "
                                    "[default: the demo's datasets of the embodiments the model knows]."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (this machine only by default)."),
    port: int = typer.Option(8000, "--port", "-p", min=0, max=65535, help="Port to listen on (0: any free one)."),
    steps: int = typer.Option(1, "--steps", min=1, help="Euler sampling steps per frame."),
    guidance: float = typer.Option(1.5, "--guidance", min=0.0, max=10.0, help="Classifier-free guidance at the start."),
    min_change: float = typer.Option(3.0, "--min-change", min=0.0, help="Predicted changes of fewer grey levels are dropped."),
    device: str = typer.Option("cpu", "--device", help="torch device, e.g. cpu or cuda."),
    threads: int = typer.Option(1, "--threads", min=1, max=256,
                                help="torch CPU threads (tiny at 64x64 on a busy 2-core CPU: 1 thread made 28 frames/s, 2 made 3)."),
) -> None:
    """Serve a page that drives the model: pick an embodiment, start from a held-out episode, play with keys or a gamepad."""
    try:
        from unified_action.play.server import bind, serve
        from unified_action.play.session import Player
    except ImportError as e:
        raise UnifiedActionError(f"uact play needs the `play` extra ({e.name} is missing): pip install -e '.[play]'") from None
    from unified_action.tokenization.registry import REGISTRY_ENV

    if registry is None and not os.environ.get(REGISTRY_ENV) and (model.parent.parent / "tokenizers").is_dir():
        registry = model.parent.parent / "tokenizers"  # the demo's registry sits beside its runs
    if model == DEMO / "pretrain" / "export" and not model.is_dir():
        raise UnifiedActionError(f"--model: {model}: no export there; run `uact demo` first, or pass --model EXPORT_DIR")
    bind(host, port).close()  # a port in use is said before the model loads, not after
    chosen = list(data) if data else default_data(model)
    if not data:
        from unified_action.data.dataset import open_dataset
        from unified_action.models.pretrained import read_export

        known = read_export(model, weights=False)[0]["tokenizers"]
        chosen = [p for p in chosen if open_dataset(p).name in known]
    import torch

    torch.set_num_threads(threads)  # one frame's tensors are small: more threads mostly wait for each other
    player = Player(model, registry, chosen, device=device, steps=steps, guidance=guidance, min_change=min_change)
    console = make_console()
    names = ", ".join(f"{e.name} ({e.frame_rate:g} frames/s)" for e in player.embodiments.values())
    serve(player, host, port, ready=lambda url: console.print(f"playing {model} on {names}\nopen {url}  (Ctrl-C stops)"))
    console.print("stopped")
