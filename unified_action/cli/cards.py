"""`uact card ...`: check data cards."""

from __future__ import annotations

from pathlib import Path

import typer

from unified_action.cards import load_card
from unified_action.errors import CardError
from unified_action.tokenization.kinds import require_valid_card

app = typer.Typer(help="Check data cards (data_cards/<name>.md).", no_args_is_help=True)


@app.command("validate")
def validate(paths: list[Path] = typer.Argument(..., help="Card files or directories of cards.")) -> None:
    """Validate cards; print one line per problem (file: field: expected) and exit 2 if any."""
    files = [f for p in paths for f in (sorted(p.glob("*.md")) if p.is_dir() else [p])]
    problems: list[str] = []
    for f in files:
        try:
            card = require_valid_card(load_card(f))  # the tokenizer section is checked by its kind
            typer.echo(f"ok    {f}  ({card.embodiment}, {card.mapping.dim} slots, {card.header.tokenizer.kind})")
        except CardError as e:
            problems += e.problems
    if problems:
        raise CardError(problems)
