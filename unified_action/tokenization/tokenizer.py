"""An embodiment's action tokenizer: chunks of unified slot values <-> fixed-length token sequences.

Sequence of one chunk (T steps x D slots, slots in id order): `<bos> <embodiment> payload <eos> <pad>...`,
where the payload is laid out by the tokenizer's kind (tokenization/kinds/):

    bin, discrete:  <bos> <embodiment> v(t0,d0) v(t0,d1) ... v(T-1,D-1) <eos> <pad>...
    fast:           <bos> <embodiment> bpe bpe ... <sep> s(t0,d0) ... <eos> <pad>...

where v is a bin token (continuous slot) or a state token (binary, categorical slot), bpe pieces carry
the DCT coefficients of every continuous slot, and s are the state tokens of the discrete slots. Here: the
framing, normalization and state tokens every kind shares. Alongside
the ids, `slots` and `steps` give the slot id and time step of every value token (-1 elsewhere), for the
world model's slot and position embeddings.

Inputs and outputs are numpy arrays, or torch tensors when torch tensors come in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from unified_action.cards import DataCard
from unified_action.errors import TokenizerError
from unified_action.tokenization import codecs
from unified_action.tokenization.agents import AgentFraming
from unified_action.tokenization.batches import ActionBatch, TokenBatch
from unified_action.tokenization.kinds import get_kind
from unified_action.tokenization.normalization import Normalizer, Stats
from unified_action.tokenization.vocabulary import BOS

__all__ = ["FORMAT_VERSION", "ActionBatch", "ActionTokenizer", "TokenBatch", "TokenizerSpec"]

FORMAT_VERSION = 1


@dataclass(frozen=True)
class TokenizerSpec:
    """Everything needed to encode and decode, stored as spec.json beside stats.json and bpe.model."""

    name: str
    embodiment: str
    embodiment_token: int
    kind: str  # a registered tokenizer kind (tokenization/kinds/): bin, fast, discrete, ...
    chunk_length: int
    slots: tuple[str, ...]
    slot_ids: tuple[int, ...]
    num_classes: tuple[int, ...]  # 0 continuous, 2 binary, n categorical
    max_tokens: int
    action_space_version: int
    vocab_version: int
    card_sha256: str
    fast_scale: float | None = None
    bpe_start: int | None = None
    bpe_size: int | None = None
    heldout: dict = field(default_factory=dict)  # the round-trip report measured at registration
    format_version: int = FORMAT_VERSION
    # A scene with several agents (its card's `agents`): their names, and how many of `slots` each has (they follow
    # one another). Empty for one agent, and then left out of spec.json, which reads as before.
    agents: tuple[str, ...] = ()
    agent_dims: tuple[int, ...] = ()

    def to_json(self) -> dict:
        d = asdict(self)
        if not self.agents:
            del d["agents"], d["agent_dims"]
        return d

    @classmethod
    def from_json(cls, d: dict) -> TokenizerSpec:
        d = dict(d)
        for k in ("slots", "slot_ids", "num_classes", "agents", "agent_dims"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


def _to_numpy(x) -> tuple[np.ndarray, bool]:
    if type(x).__module__.startswith("torch"):
        return x.detach().cpu().numpy(), True
    return np.asarray(x), False


def _like(batch, as_torch: bool):
    if not as_torch:
        return batch
    import torch

    for k, v in vars(batch).items():
        if isinstance(v, np.ndarray):
            setattr(batch, k, torch.from_numpy(np.ascontiguousarray(v)))
    return batch


class ActionTokenizer:
    def __init__(self, spec: TokenizerSpec, stats: Stats, bpe_model: bytes | None = None, card: DataCard | None = None):
        self.spec, self.stats, self.card = spec, stats, card
        self.content_hash: str | None = None  # set by the registry: what checkpoints record and compare
        self.num_classes = np.asarray(spec.num_classes, dtype=np.int64)
        self.continuous = self.num_classes == 0
        self.normalizer = Normalizer(stats, self.continuous)
        self.slot_ids = np.asarray(spec.slot_ids, dtype=np.int64)
        self.kind = get_kind(spec.kind)(self, bpe_model)
        self.framing = AgentFraming(self) if spec.agents else None  # several agents: each payload after its agent token

    # ------------------------------------------------------------------ sizes
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def horizon(self) -> int:
        return self.spec.chunk_length

    @property
    def dim(self) -> int:
        return len(self.spec.slots)

    @property
    def min_length(self) -> int:
        """The shortest padded length allowed (the kind's): every chunk's exact length (bin, discrete), or the
        framing and button tokens of a fast chunk with no BPE piece at all."""
        return self.framing.min_length if self.framing else self.kind.min_length

    @property
    def agents(self) -> tuple[str, ...]:
        """The scene's agents in order; () for an embodiment of one agent."""
        return self.spec.agents

    # ------------------------------------------------------------------ encode
    def encode(self, actions, length: int | None = None) -> TokenBatch:
        """actions [B, T, D] in unified units -> TokenBatch padded to `length` (default: spec.max_tokens)."""
        x, as_torch = _to_numpy(actions)
        x = self._check_actions(x)
        length = self.spec.max_tokens if length is None else int(length)
        if length < self.min_length:
            raise TokenizerError(f"tokenizer '{self.name}': length {length} is too short, at least {self.min_length} needed")
        if self.framing is not None:
            return _like(self.framing.encode(x, length), as_torch)
        z, clipped = self.normalizer.normalize(x)
        disc = ~self.continuous
        states, state_clipped = codecs.state_encode(x[..., disc], self.num_classes[disc])
        clipped = clipped + state_clipped.reshape(len(x), -1).sum(1)
        batch = self.kind.encode(z, states, length)
        batch.clipped = batch.clipped + clipped
        if batch.agents is None:  # one agent
            batch.agents = np.full_like(batch.slots, -1)
        return _like(batch, as_torch)

    def _check_actions(self, x: np.ndarray) -> np.ndarray:
        want = (self.horizon, self.dim)
        if x.ndim != 3 or x.shape[1:] != want:
            raise TokenizerError(f"tokenizer '{self.name}': expected actions of shape [batch, {want[0]}, {want[1]}], got {list(x.shape)}")
        x = np.asarray(x, dtype=np.float64)  # no copy when it already is float64: encode never writes into x
        finite = np.isfinite(x).reshape(len(x), -1).all(1)
        if not finite.all():
            raise TokenizerError(f"tokenizer '{self.name}': batch item {int(np.argmin(finite))} holds NaN or infinite actions")
        return x

    # ------------------------------------------------------------------ decode
    def decode(self, tokens) -> ActionBatch:
        """tokens [B, L] -> ActionBatch; a malformed item is flagged invalid with its reason, values NaN."""
        t, as_torch = _to_numpy(tokens)
        if t.ndim != 2:
            raise TokenizerError(f"tokenizer '{self.name}': expected tokens of shape [batch, length], got {list(t.shape)}")
        t = t.astype(np.int64)
        B, T, D = len(t), self.horizon, self.dim
        values = np.zeros((B, T, D))
        reason = np.full(B, "", dtype=object)

        def fail(bad: np.ndarray, why: str) -> None:
            reason[bad & (reason == "")] = why

        if t.shape[1] < 4:
            fail(np.ones(B, bool), f"sequence of length {t.shape[1]} is too short")
        else:
            fail(t[:, 0] != BOS, "does not start with <bos>")
            fail(t[:, 1] != self.spec.embodiment_token, f"embodiment token is not {self.spec.embodiment_token} ({self.spec.embodiment})")
            (self.framing or self.kind).decode(t, values, fail)
        valid = reason == ""
        actions = self.normalizer.unnormalize(values)
        actions[~valid] = np.nan
        return _like(ActionBatch(actions, valid, reason.tolist()), as_torch)

    def check_states(self, tok: np.ndarray, fail) -> np.ndarray:
        """tok [B, T, Dd] state tokens of the discrete dims -> their values; flags tokens of the wrong kind."""
        vals, ok = codecs.state_decode(tok, self.num_classes[~self.continuous])
        fail(~ok.reshape(len(tok), -1).all(1), "a button or category token does not fit its slot")
        return vals

    # ------------------------------------------------------------------ native units
    def encode_native(self, native, length: int | None = None) -> TokenBatch:
        """Native actions [B, T, native_dim] (card order) -> tokens, through the card's mapping."""
        x, as_torch = _to_numpy(native)
        unified, outside = self._card().mapping.to_unified(x)
        batch = self.encode(unified, length)
        batch.clipped += outside.reshape(len(x), -1).sum(1)  # native values outside the card's table count too
        return _like(batch, as_torch)

    def decode_native(self, tokens) -> ActionBatch:
        out = self.decode(tokens)
        as_torch = not isinstance(out.actions, np.ndarray)
        actions = out.actions.numpy() if as_torch else out.actions
        native = self._card().mapping.to_native(np.nan_to_num(actions))
        native[~np.asarray(out.valid)] = np.nan
        return _like(ActionBatch(native, np.asarray(out.valid), out.reasons), as_torch)

    def _card(self) -> DataCard:
        if self.card is None:
            raise TokenizerError(f"tokenizer '{self.name}' was built without its data card; native units are unknown")
        return self.card
