"""Helpers shared by tests (importable: pyproject puts tests/ on the path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "data_cards"


def unified_chunks(tok, episodes, stride=None) -> np.ndarray:
    from unified_action.tokenization.fitting import chunks_of

    return chunks_of([tok.card.mapping.to_unified(e)[0] for e in episodes], tok.horizon, stride or tok.horizon)
