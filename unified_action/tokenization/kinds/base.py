"""The base class of tokenizer kinds, and the registry of kinds by name.

A kind is how a chunk of slot values becomes tokens after normalization (`bin`: one value bin per value,
`fast`: DCT + BPE, `discrete`: state tokens only). One class per kind, registered with `@register_kind`:

- what a card may set: `Params`, the pydantic model of the card's `tokenizer.<kind>:` section (None: nothing);
- which slots it can carry (`check_slots`);
- fitting (`fit`: learned parts such as a BPE, `padded_length`: the sequence length to pad to);
- for one tokenizer: `min_length`, `encode`, `decode`.

The framing `<bos> <embodiment> ... <eos> <pad>...`, normalization and the state tokens of binary and
categorical slots are shared and stay in tokenizer.py; a kind lays out the payload between them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from unified_action.action_space import Slot
from unified_action.errors import TokenizerError, did_you_mean
from unified_action.tokenization.batches import TokenBatch
from unified_action.tokenization.vocabulary import BOS, PAD

if TYPE_CHECKING:
    from unified_action.tokenization.normalization import Stats
    from unified_action.tokenization.tokenizer import ActionTokenizer, TokenizerSpec

Log = Callable[[str], None]
Fail = Callable[[np.ndarray, str], None]  # (items [B] bool, why): marks those items invalid with the first reason


class KindParams(BaseModel):
    """Base of a kind's card parameters: unknown keys and non-finite numbers are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class TokenizerKind(ABC):
    """One kind of tokenizer. Class attributes and classmethods describe the kind; an instance serves one
    ActionTokenizer (`tok`), with its learned model (`model`: e.g. the BPE bytes) if the kind has one."""

    name: ClassVar[str]  # set by @register_kind
    Params: ClassVar[type[KindParams] | None] = None  # the card's `tokenizer.<name>:` section
    # Whether the kind learns a model, which the registry stores as bpe.model; a model whose pieces are token ids
    # sets spec.bpe_start and bpe_size in `fit`, and the registry keeps that block of ids for it (fast).
    has_model: ClassVar[bool] = False
    model_name: ClassVar[str] = "model"  # what the stored model is, for error messages
    framing: ClassVar[int] = 3  # tokens besides the payload: <bos> <embodiment> <eos> (fast adds <sep>)
    # Whether a scene's agents can each have their payload framed by an agent token (tokenization/agents.py): needs a
    # payload of one fixed length per chunk
    frames_agents: ClassVar[bool] = False

    def __init__(self, tok: ActionTokenizer, model: bytes | None):
        self.tok = tok
        self.model = model

    # ------------------------------------------------------------------ what a card may ask
    @classmethod
    def check_slots(cls, slots: Sequence[Slot]) -> str | None:
        """Why this kind cannot carry an embodiment with these slots (in id order), or None."""
        return None

    @classmethod
    def read_params(cls, sections: dict[str, object]) -> KindParams | None:
        """The card's parameters for this kind (its defaults when the card gives none); checked by check_card."""
        if cls.Params is None:
            return None
        return cls.Params.model_validate(sections.get(cls.name, {}))

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, spec: TokenizerSpec, params: KindParams | None, chunks: np.ndarray, stats: Stats, *,
            bpe_start: int, rng: np.random.Generator, log: Log) -> tuple[TokenizerSpec, bytes | None]:
        """Learn what the kind learns from training chunks [N, T, D] (unified units) -> (spec, model bytes)."""
        return spec, None

    @classmethod
    def length_bound(cls, spec: TokenizerSpec) -> int:
        """A padded length no chunk's sequence can exceed."""
        return cls.framing + spec.chunk_length * len(spec.slots)

    def padded_length(self, chunks: np.ndarray) -> int:
        """The length every sequence is padded to (spec.max_tokens), chosen from the training chunks."""
        return self.min_length

    @classmethod
    def check_model(cls, model: bytes | None, spec: TokenizerSpec) -> None:
        """Raise (any exception) if the stored model is unusable; the registry calls this when loading."""
        return None  # kinds without a model have nothing to check

    # ------------------------------------------------------------------ one tokenizer
    @property
    @abstractmethod
    def min_length(self) -> int:
        """The shortest padded length `encode` accepts."""

    @abstractmethod
    def encode(self, z: np.ndarray, states: np.ndarray, length: int) -> TokenBatch:
        """z [B, T, D] normalized values (continuous slots in [-1, 1]), states [B, T, Dd] state tokens of the
        binary/categorical slots -> a TokenBatch of `length` columns with its framing; `clipped` counts what the
        kind itself clipped (the caller adds normalization's)."""

    @abstractmethod
    def decode(self, t: np.ndarray, values: np.ndarray, fail: Fail) -> None:
        """t [B, L] tokens whose <bos> and embodiment token are checked -> fills values [B, T, D] (normalized),
        calling `fail` for malformed items."""


_KINDS: dict[str, type[TokenizerKind]] = {}


def register_kind(name: str) -> Callable[[type[TokenizerKind]], type[TokenizerKind]]:
    """Class decorator: `@register_kind("fast")` makes the class the kind a card names with `kind: fast`."""

    def add(cls: type[TokenizerKind]) -> type[TokenizerKind]:
        if not (isinstance(cls, type) and issubclass(cls, TokenizerKind)):
            raise TypeError(f"tokenizer kind '{name}': {cls!r} is not a TokenizerKind subclass")
        if name in _KINDS and _KINDS[name] is not cls:
            raise ValueError(f"tokenizer kind '{name}' is already registered by {_KINDS[name].__qualname__}")
        cls.name = name
        _KINDS[name] = cls
        return cls

    return add


def unregister_kind(name: str) -> None:
    """Remove a kind (for tests that register a throwaway one)."""
    _KINDS.pop(name, None)


def kind_names() -> list[str]:
    return sorted(_KINDS)


def unknown_kind_message(name: str) -> str:
    return f"unknown tokenizer kind '{name}'{did_you_mean(name, _KINDS)}; known: {', '.join(kind_names())}"


def get_kind(name: str) -> type[TokenizerKind]:
    """The class of a registered kind; an unknown name is a TokenizerError with did-you-mean."""
    try:
        return _KINDS[name]
    except KeyError:
        raise TokenizerError(unknown_kind_message(name)) from None


def longest_sequence(tok: ActionTokenizer, chunks: np.ndarray, batch: int = 1024) -> int:
    """The most tokens any chunk takes, encoded batch by batch (the worst-case length is large)."""
    return max(int(tok.encode(chunks[i: i + batch]).mask.sum(1).max()) for i in range(0, len(chunks), batch))


def framed(B: int, length: int, embodiment_token: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens, slots, steps) [B, length]: <bos> <embodiment> then <pad>, slot and step -1 everywhere."""
    tokens = np.full((B, length), PAD, dtype=np.int64)
    tokens[:, 0], tokens[:, 1] = BOS, embodiment_token
    return tokens, np.full((B, length), -1, dtype=np.int64), np.full((B, length), -1, dtype=np.int64)
