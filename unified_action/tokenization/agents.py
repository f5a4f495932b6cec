"""Chunks of a scene with several agents: each agent's payload framed by its agent token.

    <bos> <embodiment> <agent 0> payload_0 <agent 1> payload_1 ... <eos> <pad>...

payload_k is exactly what agent k's values alone would encode to between `<embodiment>` and `<eos>` (one view
tokenizer per agent: its slots and statistics, the same kind). Agent tokens come from the vocabulary's agent
section, so agent k means "the k-th agent of the card" for every scene; the world model adds an agent embedding
to each of its tokens and pools each agent's tokens on their own. Only kinds whose payload has one length per
chunk (`bin`, `discrete`: `frames_agents`) frame agents, so every agent token sits at a fixed position.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from unified_action.tokenization.batches import TokenBatch
from unified_action.tokenization.normalization import Stats
from unified_action.tokenization.vocabulary import AGENT_BASE, BOS, EOS, PAD

if TYPE_CHECKING:
    from unified_action.tokenization.tokenizer import ActionTokenizer


class AgentFraming:
    """The per-agent views of a tokenizer whose spec lists agents, and the stitching of their payloads."""

    def __init__(self, tok: ActionTokenizer):
        from unified_action.tokenization.tokenizer import ActionTokenizer

        spec, st = tok.spec, tok.stats
        self.tok, self.views, self.columns = tok, [], []
        start = 0
        for name, d in zip(spec.agents, spec.agent_dims):
            cols = slice(start, start + d)
            sub = replace(spec, name=f"{spec.name}/{name}", slots=spec.slots[cols], slot_ids=spec.slot_ids[cols],
                          num_classes=spec.num_classes[cols], agents=(), agent_dims=(), max_tokens=0)
            stats = Stats(st.slots[cols], st.count, *(getattr(st, k)[cols] for k in ("mean", "std", "min", "max", "q01", "q99")))
            view = ActionTokenizer(sub, stats)
            self.views.append(ActionTokenizer(replace(sub, max_tokens=view.min_length), stats))
            self.columns.append(cols)
            start += d
        self.payloads = [v.min_length - v.kind.framing for v in self.views]  # values of each agent's payload

    @property
    def min_length(self) -> int:
        return 3 + len(self.views) + sum(self.payloads)

    def encode(self, x: np.ndarray, length: int) -> TokenBatch:
        """x [B, T, D] unified values (checked) -> the framed batch of `length` columns."""
        B = len(x)
        tokens = np.full((B, length), PAD, dtype=np.int64)
        slots, steps, agents = (np.full((B, length), -1, dtype=np.int64) for _ in range(3))
        tokens[:, 0], tokens[:, 1] = BOS, self.tok.spec.embodiment_token
        clipped, at = np.zeros(B, np.int64), 2
        for k, (view, cols, n) in enumerate(zip(self.views, self.columns, self.payloads)):
            part = view.encode(x[..., cols])
            tokens[:, at], agents[:, at: at + 1 + n] = AGENT_BASE + k, k
            tokens[:, at + 1: at + 1 + n] = part.tokens[:, 2: 2 + n]
            slots[:, at + 1: at + 1 + n], steps[:, at + 1: at + 1 + n] = part.slots[:, 2: 2 + n], part.steps[:, 2: 2 + n]
            clipped += part.clipped
            at += 1 + n
        tokens[:, at] = EOS
        return TokenBatch(tokens, tokens != PAD, slots, steps, clipped, np.zeros(B, bool), agents)

    def decode(self, t: np.ndarray, values: np.ndarray, fail) -> None:
        """t [B, L] (whose <bos> and embodiment token are checked) -> values [B, T, D] normalized; `fail` flags items."""
        B = len(t)
        if t.shape[1] < self.min_length:
            fail(np.ones(B, bool), f"sequence of length {t.shape[1]} cannot hold {len(self.views)} agents' chunks")
            return
        at = 2
        for k, (view, cols, n) in enumerate(zip(self.views, self.columns, self.payloads)):
            fail(t[:, at] != AGENT_BASE + k, f"no agent token {AGENT_BASE + k} (agent {k}) where agent {k}'s chunk starts")
            sub = np.full((B, 3 + n), PAD, dtype=np.int64)
            sub[:, 0], sub[:, 1], sub[:, 2: 2 + n], sub[:, 2 + n] = BOS, view.spec.embodiment_token, t[:, at + 1: at + 1 + n], EOS
            part = np.zeros((B,) + values.shape[1:2] + (cols.stop - cols.start,))
            view.kind.decode(sub, part, fail)
            values[..., cols] = part
            at += 1 + n
        fail(t[:, at] != EOS, f"no <eos> after the {len(self.views)} agents' chunks")
        fail((t[:, at + 1:] != PAD).any(1), "tokens after <eos> are not <pad>")
