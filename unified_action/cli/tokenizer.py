"""`uact tokenizer ...`: register embodiments, list and inspect tokenizers, print the vocabulary."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from unified_action.cards import load_card
from unified_action.console import make_console
from unified_action.data.dataset import shard_episodes
from unified_action.tokenization import Registry
from unified_action.tokenization.episodes import load_episodes
from unified_action.tokenization.fitting import chunks_of, roundtrip_report
from unified_action.tokenization.kinds import require_valid_card
from unified_action.tokenization.registry import REGISTRY_ENV

app = typer.Typer(help="Embodiment tokenizers and the shared action vocabulary.", no_args_is_help=True)
console = make_console()

RegistryOpt = typer.Option(None, "--registry", "-r", envvar=REGISTRY_ENV,
                           help="Registry directory [default: ./tokenizers].", show_envvar=True)


@app.command("register")
def register(
    card: Path = typer.Argument(..., help="The embodiment's data card, e.g. data_cards/carracing.md."),
    data: Path = typer.Option(..., "--data", "-d", help="Episodes: a .npy/.npz file, a directory of them, or a shard dataset "
                              "(its stats.json, computed over all episodes, is used for normalization)."),
    registry: Path = RegistryOpt,
    force: bool = typer.Option(False, "--force", help="Replace a registered tokenizer of the same name."),
    heldout_fraction: float = typer.Option(0.1, min=0.0, max=0.9, help="Episodes held out for the round-trip report."),
    seed: int = typer.Option(0, help="Seed for the sampling of training chunks."),
) -> None:
    """Fit normalization stats and the tokenizer from a card and episodes; write <registry>/<name>/ atomically."""
    c = require_valid_card(load_card(card))  # before any episode is read
    stats = fitted = None
    from unified_action.data.dataset import is_shard_dataset  # needs no optional dependency

    if is_shard_dataset(data):
        from unified_action.data.dataset import open_dataset
        from unified_action.training.preflight import fitted_from

        episodes, stats = shard_episodes(data, c)
        ds = open_dataset(data)
        fitted = fitted_from(ds, (0, ds.episodes))  # a fine-tuning job on all of them may use this tokenizer
    else:
        episodes = load_episodes(data, c, progress=True)
    reg = Registry(registry)
    with console.status(f"fitting '{c.name}' on {len(episodes)} episodes") as status:
        tok = reg.register(c, episodes, force=force, heldout_fraction=heldout_fraction, seed=seed,
                           log=lambda msg: (console.log(msg), status.update(msg)), stats=stats, fitted_from=fitted)
    _print_summary(tok)


@app.command("list")
def list_(registry: Path = RegistryOpt) -> None:
    """List registered tokenizers."""
    reg = Registry(registry)
    table = Table(title=f"tokenizers in {reg.root}")
    for col in ("name", "embodiment", "token", "kind", "chunk", "slots", "tokens/chunk", "RMSE (norm.)", "hash"):
        table.add_column(col, overflow="fold")
    for name in reg.names():
        s = reg.spec(name)
        h = s.heldout
        table.add_row(name, s.embodiment, str(s.embodiment_token), s.kind, str(s.chunk_length), str(len(s.slots)),
                      f"{h.get('tokens_mean', float('nan')):.1f}", f"{h.get('rmse_normalized', float('nan')):.4f}",
                      reg.content_hash(name)[:12])
    console.print(table)


@app.command("show")
def show(
    name: str = typer.Argument(..., help="A registered tokenizer."),
    registry: Path = RegistryOpt,
    data: Path = typer.Option(None, "--data", "-d", help="Measure the round trip on these episodes instead."),
) -> None:
    """Show a tokenizer: slots, stats, tokens per chunk and round-trip error on held-out data."""
    tok = Registry(registry).load(name)
    if data is not None:
        episodes = load_episodes(data, tok.card, progress=True)
        unified = [tok.card.mapping.to_unified(e)[0] for e in episodes]
        report = roundtrip_report(tok, chunks_of(unified, tok.horizon, tok.horizon))
        report["measured_on"] = str(data)
    else:
        report = tok.spec.heldout
    _print_summary(tok, report)


@app.command("vocab")
def vocab(registry: Path = RegistryOpt) -> None:
    """Print the shared vocabulary layout and what this registry has allocated in it."""
    v = Registry(registry).vocabulary()
    table = Table(title=f"shared action vocabulary, layout v{v.version}, {v.size} ids")
    for col in ("section", "first id", "last id", "what"):
        table.add_column(col, overflow="fold")
    for row in v.table():
        table.add_row(*map(str, row))
    console.print(table)


def _fmt(report: dict, key: str, spec: str = ".4f") -> str:
    """A figure of the report, or 'n/a' where the report (made by an older version) lacks it."""
    value = report.get(key)
    return "n/a" if value is None else format(value, spec)


def _print_summary(tok, report: dict | None = None) -> None:
    s, report = tok.spec, report or tok.spec.heldout
    console.print(f"[bold]{s.name}[/bold]  embodiment {s.embodiment} (token {s.embodiment_token}), kind {s.kind}, "
                  f"chunk {s.chunk_length} steps, {len(s.slots)} slots, padded length {s.max_tokens}"
                  + (f", DCT scale {s.fast_scale:g}" if s.fast_scale is not None else "")
                  + (f", BPE ids {s.bpe_start}..{s.bpe_start + s.bpe_size - 1}" if s.bpe_start is not None else ""))
    console.print(f"content hash {tok.content_hash}")
    table = Table(title=f"slots (round trip on {report.get('measured_on', '?')}, {report.get('chunks', 0)} chunks)")
    for col in ("slot", "kind", "units", "q01", "q99", "RMSE (slot units)"):
        table.add_column(col, overflow="fold")
    per_slot = report.get("rmse_slot_units", {})
    for i, (slot, card_slot) in enumerate(zip(s.slots, tok.card.mapping.slots)):
        kind = card_slot.kind.value + (f"/{card_slot.num_classes}" if card_slot.num_classes > 2 else "")
        table.add_row(slot, kind, card_slot.units, f"{tok.stats.q01[i]:.4g}", f"{tok.stats.q99[i]:.4g}",
                      f"{per_slot[slot]:.4g}" if slot in per_slot else "n/a")
    console.print(table)
    console.print(f"tokens per chunk: mean {_fmt(report, 'tokens_mean', '.1f')}, max {_fmt(report, 'tokens_max', 'd')}; "
                  f"normalized RMSE {_fmt(report, 'rmse_normalized')} within the fitted range "
                  f"(max {_fmt(report, 'max_abs_error_normalized')}), {_fmt(report, 'rmse_normalized_unclipped')} counting clipped values; "
                  f"clipped {_fmt(report, 'clipped_fraction', '.2%')} of values; invalid {_fmt(report, 'invalid', 'd')}; "
                  f"overflow {_fmt(report, 'overflow', 'd')}")
