"""Error types and the one-line message conventions shared by the whole package."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UnifiedActionError(Exception):
    """Base class: every error the package raises on bad input is one of these, with a one-line message."""


class CardError(UnifiedActionError):
    """A data card is malformed. `problems` holds every problem, one line each: 'file: field: message'."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(problems[0] + more)


class RegistryError(UnifiedActionError):
    """A tokenizer registry is missing, locked, inconsistent or was edited by hand."""


class TokenizerError(UnifiedActionError):
    """Actions or tokens do not fit a tokenizer (wrong shape, non-finite values, unknown kind)."""


class DataError(UnifiedActionError):
    """An episode file cannot be read as the card says."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choices, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
