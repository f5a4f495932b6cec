"""`fast`: the FAST recipe (pi0-FAST) over the continuous slots, state tokens for the others.

    <bos> <embodiment> bpe bpe ... <sep> s(t0,d0) ... <eos> <pad>...

The bpe pieces carry the DCT coefficients of every continuous slot (codecs.py); s are the state tokens of the
binary and categorical slots. Sequences differ in length: the padded length is chosen from the training chunks,
and a chunk that does not fit is encoded `<bos> <embodiment> <unk> <eos>` and flagged `overflow`, never truncated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from itertools import chain
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from unified_action.action_space import Slot, SlotKind
from unified_action.tokenization import codecs
from unified_action.tokenization.batches import TokenBatch
from unified_action.tokenization.kinds.base import Fail, KindParams, TokenizerKind, framed, longest_sequence, register_kind
from unified_action.tokenization.normalization import Normalizer
from unified_action.tokenization.vocabulary import EOS, PAD, SEP, UNK

# Candidate DCT scales for scale='auto', smallest first: the first that meets target_rmse wins, since a
# smaller scale means smaller integers and so fewer BPE tokens.
SCALE_LADDER = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 150, 200, 300, 500, 1000)
SCALE_PROBE_CHUNKS = 2_000
# Padded length: the longest training sequence times this, plus slack. Small data (few-shot) leaves the BPE
# unfamiliar with some held-out chunks, which then take more pieces; an item that still does not fit is flagged
# `overflow`, never truncated.
LENGTH_MARGIN, LENGTH_SLACK = 1.5, 8
# Below this many training chunks (a few-shot registration: 5 episodes of a 1-s chunk give ~10) the BPE has seen
# too little to predict held-out lengths: every such chunk overflowed in practice. The padded length is then at
# least the chunk's binned length (4 + T x D), which no sane FAST sequence exceeds; it costs only action-encoder work.
FEW_CHUNKS = 1_000


class FastParams(KindParams):
    scale: Literal["auto"] | float = Field(default="auto", description="DCT scale, or 'auto' to meet target_rmse")
    target_rmse: float = Field(default=0.01, gt=0, le=1, description="normalized RMSE that scale='auto' aims at")
    vocab_size: int = Field(default=1024, ge=300, le=16384)

    @field_validator("scale", mode="before")
    @classmethod
    def _auto_or_positive(cls, v):
        # one check, one message: a union would report the literal and the number separately
        if v == "auto" or (isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= 10000):
            return v
        raise ValueError(f"expected 'auto' or a number > 0 and <= 10000, got {v!r}"[:120])


def choose_scale(z: np.ndarray, target_rmse: float) -> float:
    """The smallest ladder scale whose DCT rounding error on z [N, T, Dc] is at most target_rmse."""
    for scale in SCALE_LADDER:
        q, _ = codecs.dct_quantize(z, scale)
        err = codecs.dct_dequantize(q, scale, z.shape[1], z.shape[2]) - z
        if np.sqrt(np.mean(err**2)) <= target_rmse:
            return float(scale)
    return float(SCALE_LADDER[-1])


@register_kind("fast")
class FastKind(TokenizerKind):
    Params = FastParams
    has_model = True
    model_name = "sentencepiece model"
    framing = 4  # <bos> <embodiment> <sep> <eos>

    def __init__(self, tok, model: bytes | None):
        super().__init__(tok, model)
        if model is None:
            from unified_action.errors import TokenizerError

            raise TokenizerError(f"tokenizer '{tok.spec.name}': kind 'fast' needs its BPE model")
        self.bpe = codecs.Bpe(model, tok.spec.bpe_start)

    @classmethod
    def check_slots(cls, slots: Sequence[Slot]) -> str | None:
        if slots and all(s.kind is not SlotKind.CONTINUOUS for s in slots):
            return f"'{cls.name}' needs a continuous slot, and this card has none"
        return None

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, spec, params: FastParams, chunks, stats, *, bpe_start, rng, log):
        cont = np.asarray(spec.num_classes) == 0
        z, _ = Normalizer(stats, cont).normalize(chunks)
        z = z[..., cont]
        scale = params.scale
        if scale == "auto":
            probe = z if len(z) <= SCALE_PROBE_CHUNKS else z[rng.choice(len(z), SCALE_PROBE_CHUNKS, replace=False)]
            scale = choose_scale(probe, params.target_rmse)
            log(f"DCT scale {scale:g} meets normalized RMSE <= {params.target_rmse:g}")
        q, _ = codecs.dct_quantize(z, scale)
        model = codecs.train_bpe(codecs.coefficients_to_strings(q), params.vocab_size)
        size = codecs.Bpe(model, bpe_start).size
        log(f"BPE of {size} pieces trained on {len(z)} chunks")
        return replace(spec, fast_scale=float(scale), bpe_start=bpe_start, bpe_size=size), model

    @classmethod
    def length_bound(cls, spec) -> int:
        """Byte fallback spends at most 3 pieces per coefficient."""
        n_cont = sum(1 for n in spec.num_classes if n == 0)
        return 4 + spec.chunk_length * (3 * n_cont + (len(spec.num_classes) - n_cont))

    def padded_length(self, chunks: np.ndarray) -> int:
        spec = self.tok.spec
        seen = longest_sequence(self.tok, chunks)
        length = max(self.min_length, math.ceil(seen * LENGTH_MARGIN) + LENGTH_SLACK)
        if len(chunks) < FEW_CHUNKS:
            length = max(length, 4 + spec.chunk_length * len(spec.num_classes))
        return min(self.length_bound(spec), length)

    @classmethod
    def check_model(cls, model: bytes | None, spec) -> None:
        codecs.Bpe(model, spec.bpe_start)  # sentencepiece raises on anything that is not its model

    # ------------------------------------------------------------------ one tokenizer
    @property
    def min_length(self) -> int:
        """The framing and button tokens of a chunk with no BPE piece at all."""
        return self.framing + self.tok.horizon * int((~self.tok.continuous).sum())

    def encode(self, z: np.ndarray, states: np.ndarray, length: int) -> TokenBatch:
        cont, tok = self.tok.continuous, self.tok
        B, T, _ = z.shape
        q, clipped = codecs.dct_quantize(z[..., cont], tok.spec.fast_scale)
        ids = self.bpe.encode(codecs.coefficients_to_strings(q))
        n_bpe = np.fromiter(map(len, ids), dtype=np.int64, count=B)
        n_states = states.shape[1] * states.shape[2]
        total = n_bpe + 4 + n_states
        overflow = total > length
        tokens, slots, steps = framed(B, length, tok.spec.embodiment_token)
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
            disc_ids = np.tile(tok.slot_ids[~cont], T)
            disc_steps = np.repeat(np.arange(T), int((~cont).sum()))
            cols = sep[fit, None] + 1 + np.arange(n_states)
            tokens[rows[fit, None], cols] = states.reshape(B, -1)[fit]
            slots[rows[fit, None], cols] = disc_ids
            steps[rows[fit, None], cols] = disc_steps
        tokens[rows[fit], sep[fit] + 1 + n_states] = EOS
        tokens[overflow, 2:4] = (UNK, EOS)
        return TokenBatch(tokens, tokens != PAD, slots, steps, clipped, overflow)

    def decode(self, t: np.ndarray, values: np.ndarray, fail: Fail) -> None:
        cont, tok = self.tok.continuous, self.tok
        B, T, D = values.shape
        fail((t[:, 2] == UNK) & (t[:, 3] == EOS), "the chunk overflowed the padded length at encode")
        # Work on the used columns only: sequences are mostly padding, and past `used` every column is <pad>.
        used = int(np.max(np.nonzero((t != PAD).any(0))[0], initial=3)) + 1
        t = t[:, :used]
        L = used
        n_disc = int((~cont).sum()) * T
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
            values[..., ~cont] = tok.check_states(states, fail)
        ok_rows = np.nonzero(is_sep.any(1) & ~foreign)[0]  # only rows whose pieces are all ours reach BPE
        local = t - self.bpe.start
        strings = self.bpe.decode([local[b, 2: sep[b]].tolist() for b in ok_rows])
        n_cont = int(cont.sum())
        q = np.zeros((B, T * n_cont), dtype=np.int64)
        q[ok_rows], ok = codecs.strings_to_coefficients(strings, T * n_cont)
        bad = np.zeros(B, bool)
        bad[ok_rows[~ok]] = True
        fail(bad, "BPE pieces do not decode to at most T x D quantized coefficients")
        values[..., cont] = np.clip(codecs.dct_dequantize(q, tok.spec.fast_scale, T, n_cont), -1.0, 1.0)
