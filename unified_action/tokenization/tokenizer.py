"""An embodiment's action tokenizer: chunks of unified slot values <-> fixed-length token sequences.

Sequence of one chunk (T steps x D slots, slots in id order):

    bin, discrete:  <bos> <embodiment> v(t0,d0) v(t0,d1) ... v(T-1,D-1) <eos> <pad>...
    fast:           <bos> <embodiment> bpe bpe ... <sep> s(t0,d0) ... <eos> <pad>...

where v is a bin token (continuous slot) or a state token (binary, categorical slot), bpe pieces carry
the DCT coefficients of every continuous slot, and s are the state tokens of the discrete slots. Alongside
the ids, `slots` and `steps` give the slot id and time step of every value token (-1 elsewhere), for the
world model's slot and position embeddings.

Inputs and outputs are numpy arrays, or torch tensors when torch tensors come in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from itertools import chain

import numpy as np

from unified_action.cards import DataCard
from unified_action.errors import TokenizerError
from unified_action.tokenization import codecs
from unified_action.tokenization.normalization import Normalizer, Stats
from unified_action.tokenization.vocabulary import BOS, EOS, PAD, SEP, UNK

FORMAT_VERSION = 1


@dataclass(frozen=True)
class TokenizerSpec:
    """Everything needed to encode and decode, stored as spec.json beside stats.json and bpe.model."""

    name: str
    embodiment: str
    embodiment_token: int
    kind: str  # bin | fast | discrete
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

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> TokenizerSpec:
        d = dict(d)
        for k in ("slots", "slot_ids", "num_classes"):
            d[k] = tuple(d[k])
        return cls(**d)


@dataclass
class TokenBatch:
    tokens: np.ndarray  # [B, L] int64
    mask: np.ndarray  # [B, L] bool, False on padding
    slots: np.ndarray  # [B, L] slot id of a value token, -1 elsewhere
    steps: np.ndarray  # [B, L] time step of a value token, -1 elsewhere
    clipped: np.ndarray  # [B] values clipped to the fitted range (or coefficients to the char range)
    overflow: np.ndarray  # [B] True where the sequence did not fit in L: encoded as <bos> <emb> <unk> <eos>


@dataclass
class ActionBatch:
    actions: np.ndarray  # [B, T, D] float64 unified units; NaN for invalid items, never zeros
    valid: np.ndarray  # [B] bool
    reasons: list[str]  # '' for valid items, else why the sequence is malformed


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
        self.bpe = codecs.Bpe(bpe_model, spec.bpe_start) if spec.kind == "fast" else None
        if spec.kind == "fast" and bpe_model is None:
            raise TokenizerError(f"tokenizer '{spec.name}': kind 'fast' needs its BPE model")
        self.slot_ids = np.asarray(spec.slot_ids, dtype=np.int64)

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
        """The shortest padded length allowed: every chunk's exact length (bin, discrete), or the framing and
        button tokens of a fast chunk with no BPE piece at all."""
        if self.spec.kind == "fast":
            return 4 + self.horizon * int((~self.continuous).sum())
        return 3 + self.horizon * self.dim

    # ------------------------------------------------------------------ encode
    def encode(self, actions, length: int | None = None) -> TokenBatch:
        """actions [B, T, D] in unified units -> TokenBatch padded to `length` (default: spec.max_tokens)."""
        x, as_torch = _to_numpy(actions)
        x = self._check_actions(x)
        length = self.spec.max_tokens if length is None else int(length)
        if length < self.min_length:
            raise TokenizerError(f"tokenizer '{self.name}': length {length} is too short, at least {self.min_length} needed")
        z, clipped = self.normalizer.normalize(x)
        disc = ~self.continuous
        states, state_clipped = codecs.state_encode(x[..., disc], self.num_classes[disc])
        clipped = clipped + state_clipped.reshape(len(x), -1).sum(1)
        if self.spec.kind == "fast":
            batch = self._encode_fast(z, states, length)
            batch.clipped += clipped
        else:
            batch = self._encode_flat(z, states, length)
            batch.clipped = clipped
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

    def _encode_flat(self, z, states, length) -> TokenBatch:
        B, T, D = z.shape
        payload = np.empty((B, T, D), dtype=np.int64)
        payload[..., self.continuous] = codecs.bin_encode(z[..., self.continuous])
        payload[..., ~self.continuous] = states
        tokens = np.full((B, length), PAD, dtype=np.int64)
        tokens[:, 0], tokens[:, 1], tokens[:, 2 + T * D] = BOS, self.spec.embodiment_token, EOS
        tokens[:, 2: 2 + T * D] = payload.reshape(B, T * D)
        slots = np.full((B, length), -1, dtype=np.int64)
        steps = np.full((B, length), -1, dtype=np.int64)
        slots[:, 2: 2 + T * D] = np.tile(self.slot_ids, T)
        steps[:, 2: 2 + T * D] = np.repeat(np.arange(T), D)
        return TokenBatch(tokens, tokens != PAD, slots, steps, np.zeros(B, np.int64), np.zeros(B, bool))

    def _encode_fast(self, z, states, length) -> TokenBatch:
        B, T, _ = z.shape
        q, clipped = codecs.dct_quantize(z[..., self.continuous], self.spec.fast_scale)
        ids = self.bpe.encode(codecs.coefficients_to_strings(q))
        n_bpe = np.fromiter(map(len, ids), dtype=np.int64, count=B)
        n_states = states.shape[1] * states.shape[2]
        total = n_bpe + 4 + n_states
        overflow = total > length
        tokens = np.full((B, length), PAD, dtype=np.int64)
        slots = np.full((B, length), -1, dtype=np.int64)
        steps = np.full((B, length), -1, dtype=np.int64)
        tokens[:, 0], tokens[:, 1] = BOS, self.spec.embodiment_token
        rows = np.arange(B)
        fit = ~overflow
        # BPE pieces, scattered row by row from one flat array.
        flat = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=int(n_bpe.sum())) + self.bpe.start
        owner = np.repeat(rows, n_bpe)
        col = 2 + np.arange(len(flat)) - np.repeat(np.cumsum(n_bpe) - n_bpe, n_bpe)
        keep = fit[owner]
        tokens[owner[keep], col[keep]] = flat[keep]
        sep = 2 + n_bpe
        tokens[rows[fit], sep[fit]] = SEP
        if n_states:
            disc_ids = np.tile(self.slot_ids[~self.continuous], T)
            disc_steps = np.repeat(np.arange(T), int((~self.continuous).sum()))
            cols = sep[fit, None] + 1 + np.arange(n_states)
            tokens[rows[fit, None], cols] = states.reshape(B, -1)[fit]
            slots[rows[fit, None], cols] = disc_ids
            steps[rows[fit, None], cols] = disc_steps
        tokens[rows[fit], sep[fit] + 1 + n_states] = EOS
        tokens[overflow, 2:4] = (UNK, EOS)
        return TokenBatch(tokens, tokens != PAD, slots, steps, clipped, overflow)

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
            if self.spec.kind == "fast":
                fail((t[:, 2] == UNK) & (t[:, 3] == EOS), "the chunk overflowed the padded length at encode")
                self._decode_fast(t, values, fail)
            else:
                self._decode_flat(t, values, fail)
        valid = reason == ""
        actions = self.normalizer.unnormalize(values)
        actions[~valid] = np.nan
        return _like(ActionBatch(actions, valid, reason.tolist()), as_torch)

    def _check_states(self, tok: np.ndarray, fail) -> np.ndarray:
        """tok [B, T, Dd] state tokens of the discrete dims -> their values; flags tokens of the wrong kind."""
        vals, ok = codecs.state_decode(tok, self.num_classes[~self.continuous])
        fail(~ok.reshape(len(tok), -1).all(1), "a button or category token does not fit its slot")
        return vals

    def _decode_flat(self, t, values, fail) -> None:
        B, T, D = values.shape
        n = T * D
        if t.shape[1] < n + 3:
            fail(np.ones(B, bool), f"sequence of length {t.shape[1]} cannot hold {n} values")
            return
        payload = t[:, 2: 2 + n].reshape(B, T, D)
        cont = payload[..., self.continuous]
        fail(~codecs.is_bin(cont).reshape(B, -1).all(1), "a continuous slot holds a token that is not a value bin")
        values[..., self.continuous] = codecs.bin_decode(cont)
        values[..., ~self.continuous] = self._check_states(payload[..., ~self.continuous], fail)
        fail(t[:, 2 + n] != EOS, f"no <eos> after the {n} values")
        fail((t[:, 3 + n:] != PAD).any(1), "tokens after <eos> are not <pad>")

    def _decode_fast(self, t, values, fail) -> None:
        B, T, D = values.shape
        # Work on the used columns only: sequences are mostly padding, and past `used` every column is <pad>.
        used = int(np.max(np.nonzero((t != PAD).any(0))[0], initial=3)) + 1
        t = t[:, :used]
        L = used
        n_disc = int((~self.continuous).sum()) * T
        is_sep = t == SEP
        fail(~is_sep.any(1), "no <sep> after the BPE pieces")
        sep = np.argmax(is_sep, axis=1)
        pos = np.arange(L)
        between = (pos >= 2) & (pos < sep[:, None])
        foreign = (between & ~self.bpe.owns(t)).any(1)
        fail(foreign, "a token between <embodiment> and <sep> is not a BPE piece of this tokenizer")
        eos = sep + 1 + n_disc
        fail(eos >= L, "no room for <eos>")
        eos_c = np.minimum(eos, L - 1)
        fail(t[np.arange(B), eos_c] != EOS, f"<eos> is not right after the {n_disc} button/category tokens")
        fail(((t != PAD) & (pos > eos_c[:, None])).any(1), "tokens after <eos> are not <pad>")
        if n_disc:
            cols = np.minimum(sep[:, None] + 1 + np.arange(n_disc), L - 1)
            states = t[np.arange(B)[:, None], cols].reshape(B, T, -1)
            values[..., ~self.continuous] = self._check_states(states, fail)
        ok_rows = np.nonzero(is_sep.any(1) & ~foreign)[0]  # only rows whose pieces are all ours reach BPE
        local = t - self.bpe.start
        strings = self.bpe.decode([local[b, 2: sep[b]].tolist() for b in ok_rows])
        n_cont = int(self.continuous.sum())
        q = np.zeros((B, T * n_cont), dtype=np.int64)
        q[ok_rows], ok = codecs.strings_to_coefficients(strings, T * n_cont)
        bad = np.zeros(B, bool)
        bad[ok_rows[~ok]] = True
        fail(bad, "BPE pieces do not decode to at most T x D quantized coefficients")
        values[..., self.continuous] = np.clip(codecs.dct_dequantize(q, self.spec.fast_scale, T, n_cont), -1.0, 1.0)

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
