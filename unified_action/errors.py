"""Error types and the one-line message conventions shared by the whole package."""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable

# A bounded repr: the value a user pasted may be huge (or a shared structure that expands exponentially).
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxtuple, _SHORT.maxstring, _SHORT.maxother = 2, 4, 4, 4, 60, 60


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


class DiskFullError(UnifiedActionError):
    """A device filled up while a file was being written: 'no space left on <mount point> while writing <file>'."""


class DataError(UnifiedActionError):
    """An episode file cannot be read as the card says."""


class ConfigError(UnifiedActionError):
    """A training or fine-tuning config is malformed, or names something that does not exist."""


class TrainingError(UnifiedActionError):
    """Training cannot go on as asked: a non-finite loss, a checkpoint that does not fit this run."""


def short(value) -> str:
    """A bounded repr of a value read from a user's file, for an error line (a 10**6-deep list prints as '[[...]]')."""
    return _SHORT.repr(value)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest choices, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


# pydantic's names of union members and validators: not fields of the user's file
_UNION_NOISE = {"float", "int", "str", "bool", "list", "dict", "gymnasium", "rlds", "lerobot", "numpy",
                "identity", "affine", "rpy_to_rotvec", "table", "literal", "constrained-str", "function-after"}


def _loc(parts) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p in _UNION_NOISE or "[" in p or p.startswith(("literal", "function")):
            continue
        else:
            out += f".{p}" if out else p
    return out or "header"


def pydantic_lines(err, where: str, known_keys: Iterable[str], prefix: str = "") -> list[str]:
    """A pydantic ValidationError as one line per problem: 'file: field: message', unknown keys with did-you-mean.

    `prefix`: where the validated mapping sits in the file (e.g. 'tokenizer.fast'), put before each field."""
    lines, seen = [], set()
    for e in err.errors():
        loc = _loc(e["loc"])
        if prefix:
            loc = prefix if loc == "header" else f"{prefix}.{loc}" if not loc.startswith("[") else prefix + loc
        if loc in seen:
            continue
        seen.add(loc)
        if e["type"] == "missing":
            lines.append(f"{where}: {loc}: required field is missing")
        elif e["type"] == "extra_forbidden":
            lines.append(f"{where}: {loc}: unknown field{did_you_mean(loc.rsplit('.', 1)[-1], known_keys)}")
        else:
            got = _SHORT.repr(e.get("input"))
            got = got if len(got) <= 80 else got[:77] + "..."  # one readable line, whatever was pasted there
            lines.append(f"{where}: {loc}: {e['msg']} (got {got})")
    return lines
