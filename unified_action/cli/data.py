"""`uact data ...`: record episodes from simulators, convert RLDS / LeRobot datasets, inspect shard datasets."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from unified_action.cards import load_card
from unified_action.cards.schema import SIMULATOR_SOURCES
from unified_action.console import make_console
from unified_action.errors import DataError
from unified_action.tokenization.kinds import require_valid_card

app = typer.Typer(help="Datasets: simulators, RLDS and LeRobot into webdataset shards.", no_args_is_help=True)
console = make_console()

SizeOpt = typer.Option(64, "--size", help="Frames are resized to SIZE x SIZE; 0 keeps the source's size.")
WorkersOpt = typer.Option(2, "--workers", "-j", min=1,
                          help="Parts written in parallel: processes, or Ray tasks with --engine ray. The shards depend on it.")
ShardOpt = typer.Option(64.0, "--shard-mb", min=0.01, help="Target shard size in MiB.")
FormatOpt = typer.Option("zlib", "--image-format", help="Frame codec: zlib (lossless, fastest to read), png (lossless) or jpeg.")
AspectOpt = typer.Option("pad", "--aspect", help="A camera of another aspect ratio than SIZE x SIZE: pad (letterbox, keeps "
                         "the whole view), crop (centre) or stretch (squashes).")
OverwriteOpt = typer.Option(False, "--overwrite", help="Delete OUT first instead of resuming into it.")
EngineOpt = typer.Option("local", "--engine", help="local (processes on this machine) or ray (one Ray task per part; "
                         "pip install 'unified-action[scale]'). Both write identical shards.")
AddressOpt = typer.Option(None, "--address", help="--engine ray: HOST:PORT of a running Ray head (`ray start --head`); "
                          "without it Ray starts on this machine. Card, source and OUT must be at the same paths on every node.")


def _settings(size: int, image_format: str, shard_mb: float, aspect: str):
    from unified_action.data.convert import WriteSettings
    from unified_action.data.frames import check_aspect
    from unified_action.data.shards import FRAME_CODECS

    if image_format not in FRAME_CODECS:
        raise DataError(f"--image-format: '{image_format}', expected one of {', '.join(FRAME_CODECS)}")
    return WriteSettings(image_size=(size, size) if size else None, image_format=image_format,
                         shard_bytes=int(shard_mb * 2**20), aspect=check_aspect(aspect, "--aspect"))


@app.command("record")
def record(
    card: Path = typer.Argument(..., help="A simulator's data card (source type gymnasium), e.g. data_cards/ale_pong.md."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset directory to write (re-running resumes it)."),
    episodes: int = typer.Option(10, "--episodes", "-n", min=1),
    steps: int = typer.Option(200, "--steps", min=2, help="Steps per episode (fewer where the env ends it)."),
    seed: int = typer.Option(0, help="Episode i uses seed + i for the env and the behaviour policy."),
    style: str = typer.Option("smooth", help="Behaviour for continuous actions: smooth (OU noise) or waypoint (min-jerk)."),
    size: int = SizeOpt,
    image_format: str = FormatOpt,
    aspect: str = AspectOpt,
    shard_mb: float = ShardOpt,
    workers: int = WorkersOpt,
    rlds: bool = typer.Option(False, "--rlds", help="Also write an RLDS build (Open X-Embodiment step schema) to OUT/rlds."),
    overwrite: bool = OverwriteOpt,
    engine: str = EngineOpt,
    address: str = AddressOpt,
) -> None:
    """Roll out the card's simulator headless under a seeded behaviour policy and write shards (and RLDS)."""
    from unified_action.data.convert import SourceSpec, write_dataset

    c = require_valid_card(load_card(card))  # the whole card, tokenizer section included, before any work
    if c.header.source.type not in SIMULATOR_SOURCES:
        raise DataError(f"{card}: source.type: '{c.header.source.type}', `uact data record` needs a simulator card "
                        f"({' or '.join(SIMULATOR_SOURCES)}); "
                        f"use `uact data convert` for datasets")
    if style not in ("smooth", "waypoint"):
        raise DataError(f"--style: '{style}', expected smooth or waypoint")
    spec = SourceSpec(str(card), "sim", episodes=episodes, steps=steps, seed=seed, style=style)
    ds = write_dataset(spec, out, workers=workers, settings=_settings(size, image_format, shard_mb, aspect), overwrite=overwrite,
                       log=console.log, engine=engine, address=address)
    if rlds:
        from unified_action.data.rlds import write_rlds

        path = write_rlds(ds.card, ds.iter_episodes(), out / "rlds")
        console.log(f"RLDS build: {path}")
    _print(ds)


@app.command("convert")
def convert(
    card: Path = typer.Argument(..., help="The dataset's data card (source type rlds or lerobot)."),
    source: Path = typer.Option(..., "--source", "-s", help="The RLDS builder directory root or LeRobot dataset directory."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset directory to write (re-running resumes it)."),
    limit: int = typer.Option(None, "--limit", min=1, help="Convert only the first LIMIT episodes."),
    size: int = SizeOpt,
    image_format: str = FormatOpt,
    aspect: str = AspectOpt,
    shard_mb: float = ShardOpt,
    workers: int = WorkersOpt,
    overwrite: bool = OverwriteOpt,
    engine: str = EngineOpt,
    address: str = AddressOpt,
) -> None:
    """Convert an RLDS build (tensorflow-datasets) or a LeRobot v3 directory into shards, with statistics."""
    from unified_action.data.convert import SourceSpec, source_kind, write_dataset

    c = require_valid_card(load_card(card))  # the whole card, tokenizer section included, before any work
    kind = source_kind(c)
    if kind not in ("rlds", "lerobot"):
        raise DataError(f"{card}: source.type: '{c.header.source.type}', `uact data convert` reads rlds or lerobot; "
                        f"record simulators with `uact data record`")
    spec = SourceSpec(str(card), kind, root=str(source), episodes=limit)
    _print(write_dataset(spec, out, workers=workers, settings=_settings(size, image_format, shard_mb, aspect), overwrite=overwrite,
                         log=console.log, engine=engine, address=address))


@app.command("info")
def info(path: Path = typer.Argument(..., help="A shard dataset directory.")) -> None:
    """Print a shard dataset's manifest summary and its action statistics."""
    from unified_action.data.dataset import open_dataset

    _print(open_dataset(path))


@app.command("verify")
def verify(path: Path = typer.Argument(..., help="A shard dataset directory.")) -> None:
    """Check every shard's size and sha256 against manifest.json (exit 2 naming each shard that differs)."""
    from unified_action.data.dataset import open_dataset, verify_dataset

    ds = open_dataset(path)
    bad = verify_dataset(ds)
    if bad:
        raise DataError(f"{ds.root}: {len(bad)} of {len(ds.shards)} shards differ from manifest.json: {'; '.join(bad[:3])}"
                        + (" ..." if len(bad) > 3 else ""))
    console.print(f"{ds.root}: {len(ds.shards)} shards match manifest.json (size and sha256)")


def _print(ds) -> None:
    m = ds.manifest
    console.print(f"[bold]{ds.root}[/]: card {ds.name} (embodiment {m['embodiment']}, layout {m['layout']}), {m['episodes']} episodes, "
                  f"{m['steps']} steps, {len(ds.shards)} shards, {m['bytes'] / 2**20:.1f} MiB")
    stats = ds.stats()
    if stats:
        table = Table(title="native action statistics")
        for col in ("dim", "mean", "std", "min", "max", "q01", "q99"):
            table.add_column(col)
        nat = stats["native"]
        for d, label in enumerate(nat["slots"]):
            table.add_row(label, *(f"{nat[k][d]:.4g}" for k in ("mean", "std", "min", "max", "q01", "q99")))
        console.print(table)
