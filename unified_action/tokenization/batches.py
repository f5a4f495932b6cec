"""What a tokenizer hands back: token batches from encode, action batches from decode."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TokenBatch:
    tokens: np.ndarray  # [B, L] int64
    mask: np.ndarray  # [B, L] bool, False on padding
    slots: np.ndarray  # [B, L] slot id of a value token, -1 elsewhere
    steps: np.ndarray  # [B, L] time step of a value token, -1 elsewhere
    clipped: np.ndarray  # [B] values clipped to the fitted range (or coefficients to the char range)
    overflow: np.ndarray  # [B] True where the sequence did not fit in L: encoded as <bos> <emb> <unk> <eos>
    agents: np.ndarray | None = None  # [B, L] agent index of an agent token and its values, -1 elsewhere (tokenizer
    # fills it: all -1 for an embodiment of one agent)


@dataclass
class ActionBatch:
    actions: np.ndarray  # [B, T, D] float64 unified units; NaN for invalid items, never zeros
    valid: np.ndarray  # [B] bool
    reasons: list[str]  # '' for valid items, else why the sequence is malformed
