"""Tokenizer kinds, one class per kind in a registry: `bin`, `fast`, `discrete`, and any a user registers.

A new kind is one module with a `TokenizerKind` subclass under `@register_kind("name")`, imported once (the
built-in ones are imported here). `check_card` checks a card's `tokenizer:` section against its kind.
"""

from unified_action.tokenization.kinds import bin, discrete, fast  # noqa: F401  (registers the built-in kinds)
from unified_action.tokenization.kinds.base import (
    KindParams,
    TokenizerKind,
    get_kind,
    kind_names,
    longest_sequence,
    register_kind,
    unregister_kind,
)
from unified_action.tokenization.kinds.card import check_card, require_valid_card

__all__ = ["KindParams", "TokenizerKind", "check_card", "get_kind", "kind_names", "longest_sequence", "register_kind",
           "require_valid_card", "unregister_kind"]
