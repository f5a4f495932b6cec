"""The flat layout of `bin` and `discrete`: one token per value, `<bos> <embodiment> v(t0,d0) ... v(T-1,D-1) <eos>`.

A continuous value is its bin token, a binary or categorical value its state token. Every chunk has the same
length, 3 + T x D, so that is both the shortest and the padded length.
"""

from __future__ import annotations

import numpy as np

from unified_action.tokenization import codecs
from unified_action.tokenization.batches import TokenBatch
from unified_action.tokenization.kinds.base import Fail, TokenizerKind, framed
from unified_action.tokenization.vocabulary import EOS, PAD


class FlatLayout(TokenizerKind):
    """Not registered itself: the layout `bin` and `discrete` share."""

    frames_agents = True  # every payload is T x D tokens

    @property
    def min_length(self) -> int:
        return self.framing + self.tok.horizon * self.tok.dim

    def encode(self, z: np.ndarray, states: np.ndarray, length: int) -> TokenBatch:
        cont, spec = self.tok.continuous, self.tok.spec
        B, T, D = z.shape
        payload = np.empty((B, T, D), dtype=np.int64)
        payload[..., cont] = codecs.bin_encode(z[..., cont])
        payload[..., ~cont] = states
        tokens, slots, steps = framed(B, length, spec.embodiment_token)
        tokens[:, 2 + T * D] = EOS
        tokens[:, 2: 2 + T * D] = payload.reshape(B, T * D)
        slots[:, 2: 2 + T * D] = np.tile(self.tok.slot_ids, T)
        steps[:, 2: 2 + T * D] = np.repeat(np.arange(T), D)
        return TokenBatch(tokens, tokens != PAD, slots, steps, np.zeros(B, np.int64), np.zeros(B, bool))

    def decode(self, t: np.ndarray, values: np.ndarray, fail: Fail) -> None:
        cont = self.tok.continuous
        B, T, D = values.shape
        n = T * D
        if t.shape[1] < n + 3:
            fail(np.ones(B, bool), f"sequence of length {t.shape[1]} cannot hold {n} values")
            return
        payload = t[:, 2: 2 + n].reshape(B, T, D)
        bins = payload[..., cont]
        fail(~codecs.is_bin(bins).reshape(B, -1).all(1), "a continuous slot holds a token that is not a value bin")
        values[..., cont] = codecs.bin_decode(bins)
        values[..., ~cont] = self.tok.check_states(payload[..., ~cont], fail)
        fail(t[:, 2 + n] != EOS, f"no <eos> after the {n} values")
        fail((t[:, 3 + n:] != PAD).any(1), "tokens after <eos> are not <pad>")
