"""A card's `tokenizer:` section checked against its kind: a known kind, only that kind's parameters, and
slots the kind can carry. The card layer checks the rest of the card (cards/card.py) and knows no kinds."""

from __future__ import annotations

from pydantic import ValidationError

from unified_action.cards import DataCard
from unified_action.errors import CardError, TokenizerError, did_you_mean, pydantic_lines
from unified_action.tokenization.kinds.base import get_kind, kind_names, unknown_kind_message


def check_card(card: DataCard) -> list[str]:
    """Problems of the card's tokenizer section, one line each: '<file>: tokenizer.<key>: <what was expected>'."""
    where, params = card.where, card.header.tokenizer
    try:
        kind = get_kind(params.kind)
    except TokenizerError:
        return [f"{where}: tokenizer.kind: {unknown_kind_message(params.kind)}"]
    problems = []
    own = ["kind", "chunk_length"] + ([kind.name] if kind.Params is not None else [])
    for key, value in params.sections.items():
        at = f"{where}: tokenizer.{key}"
        if key == kind.name and kind.Params is None:
            problems.append(f"{at}: kind '{key}' takes no parameters")
        elif key == kind.name and not isinstance(value, dict):
            problems.append(f"{at}: expected a mapping of the '{key}' parameters ({', '.join(kind.Params.model_fields)}), "
                            f"got {type(value).__name__}")
        elif key == kind.name:
            try:
                kind.Params.model_validate(value)
            except ValidationError as e:
                problems += pydantic_lines(e, where, kind.Params.model_fields, prefix=f"tokenizer.{key}")
        elif key in kind_names():
            problems.append(f"{at}: parameters of kind '{key}', but this card's kind is '{kind.name}', which does not use "
                            f"them; remove them or set kind: {key}")
        else:
            problems.append(f"{at}: unknown field{did_you_mean(key, own)}")
    m = card.mapping
    groups = [m.slots[m.agent_columns(a)] for a in range(len(m.agents))] if m.agents else [m.slots]
    for slots in groups:  # a scene's agents each carry their own slots
        why = kind.check_slots(slots)
        if why:
            fits = [n for n in kind_names() if get_kind(n).check_slots(slots) is None]
            problems.append(f"{where}: tokenizer.kind: {why}" + (f"; use {' or '.join(repr(n) for n in fits)}" if fits else ""))
            break
    if m.agents and not kind.frames_agents:
        fits = [n for n in kind_names() if get_kind(n).frames_agents]
        problems.append(f"{where}: tokenizer.kind: '{kind.name}' cannot frame several agents' chunks; use "
                        f"{' or '.join(repr(n) for n in fits)}")
    return problems


def require_valid_card(card: DataCard) -> DataCard:
    """The card, if its tokenizer section fits its kind; else a CardError with every problem."""
    problems = check_card(card)
    if problems:
        raise CardError(problems)
    return card
