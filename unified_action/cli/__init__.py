"""`uact`: one console command, one subcommand per job. The surface is frozen by tests/test_cli.py."""

from __future__ import annotations

import sys

import typer
from rich.table import Table

from unified_action import __version__, action_space
from unified_action.cli import cards, data, demo, evaluate, finetune, play, pretrain, tokenizer
from unified_action.console import make_console
from unified_action.errors import CardError, DiskFullError, UnifiedActionError, did_you_mean

app = typer.Typer(
    name="uact",
    help="unified-action: one action-conditioned video world model across robots, games and vehicles.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(cards.app, name="card")
app.add_typer(tokenizer.app, name="tokenizer")
app.add_typer(data.app, name="data")
app.command("demo")(demo.demo)
app.command("pretrain")(pretrain.pretrain)
app.command("export")(pretrain.export)
app.command("finetune")(finetune.finetune)
app.command("eval")(evaluate.evaluate)
app.command("play")(play.play)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"unified-action {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version.")) -> None:
    """Register embodiments, build the shared action vocabulary, pretrain and fine-tune world models."""


@app.command("slots")
def slots(group: str = typer.Option(None, "--group", "-g", help="Only this group, e.g. right_arm, gamepad.")) -> None:
    """Print the unified action space: every slot with its id, kind, units and mode."""
    groups = action_space.groups()
    if group is not None and group not in groups:
        raise UnifiedActionError(f"unknown group '{group}'{did_you_mean(group, groups)}; groups: {', '.join(groups)}")
    table = Table(title=f"Unified action space v{action_space.ACTION_SPACE_VERSION}")
    for col in ("id", "slot", "kind", "units", "mode", "description"):
        table.add_column(col, overflow="fold")
    for s in action_space.slots():
        if group is None or s.group == group:
            table.add_row(str(s.id), s.name, s.kind.value, s.units, s.mode.value, s.description)
    make_console().print(table)


def main() -> None:
    """Entry point. Usage errors are typer's (exit 2); our errors become one line per problem, exit 2."""
    try:
        app()
    except CardError as e:
        for line in e.problems:
            print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    except UnifiedActionError as e:
        print(f"error: {e}", file=sys.stderr)
        if isinstance(e, DiskFullError):
            _quiet_exit_hooks()
        sys.exit(2)


def _quiet_exit_hooks() -> None:
    """The disk is full and that was said once. On the way out, third-party writers still holding buffers
    (tensorboardX flushes its event file in a thread and again in an atexit callback) fail on the same full disk
    and would print a traceback for each: those reports are dropped, nothing else changes."""
    import threading

    sys.unraisablehook = lambda unraisable: None
    threading.excepthook = lambda args: None
