"""Per-dimension statistics and the q01/q99 normalization of continuous slots.

Continuous values map linearly so that q01 -> -1 and q99 -> +1 (OpenVLA, FAST). Binary and categorical
slots are never normalized. Statistics are always one value per dimension, never a scalar for all
(octo#161), and travel with the tokenizer under its content hash (octo#137, lerobot#699).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STAT_KEYS = ("mean", "std", "min", "max", "q01", "q99")


@dataclass(frozen=True)
class Stats:
    slots: tuple[str, ...]
    count: int
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    q01: np.ndarray
    q99: np.ndarray

    @classmethod
    def compute(cls, slots: list[str], values: np.ndarray) -> Stats:
        """values: [steps, dims] in unified units."""
        v = np.asarray(values, dtype=np.float64)
        q01, q99 = np.quantile(v, [0.01, 0.99], axis=0)
        return cls(tuple(slots), len(v), v.mean(0), v.std(0), v.min(0), v.max(0), q01, q99)

    def to_json(self) -> dict:
        return {"slots": list(self.slots), "count": self.count,
                **{k: [float(x) for x in getattr(self, k)] for k in STAT_KEYS}}

    @classmethod
    def from_json(cls, d: dict) -> Stats:
        n = len(d["slots"])
        arrays = {k: np.asarray(d[k], dtype=np.float64) for k in STAT_KEYS}
        bad = [k for k, a in arrays.items() if a.shape != (n,) or not np.all(np.isfinite(a))]
        if bad:
            raise ValueError(f"stat '{bad[0]}' must hold {n} finite numbers, one per slot")
        return cls(tuple(d["slots"]), int(d["count"]), **arrays)


class Normalizer:
    """Maps the continuous dimensions (mask) between unified units and [-1, 1]."""

    # Below this spread a dimension is treated as constant: it normalizes to 0 and decodes to its q01.
    MIN_SPREAD = 1e-8

    def __init__(self, stats: Stats, continuous: np.ndarray):
        self.continuous = c = np.asarray(continuous, dtype=bool)
        spread = stats.q99 - stats.q01
        constant = spread < self.MIN_SPREAD
        # One affine map per dimension over the whole array (no boolean gathers: this runs per batch):
        # continuous z = x * gain + bias; constant dims map to 0; discrete dims pass through unchanged.
        half = np.where(constant, 1.0, spread / 2.0)
        self.gain = np.where(c, np.where(constant, 0.0, 1.0 / half), 1.0)
        self.bias = np.where(c, np.where(constant, 0.0, -stats.q01 / half - 1.0), 0.0)
        self.inv_gain = np.where(c, np.where(constant, 0.0, half), 1.0)
        self.inv_bias = np.where(c, np.where(constant, stats.q01, stats.q01 + half), 0.0)
        self.lo = np.where(c, -1.0, -np.inf)
        self.hi = np.where(c, 1.0, np.inf)

    def normalize(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-> (values with continuous dims in [-1, 1], per-item count of clipped values). x: [B, T, D]."""
        z = x * self.gain + self.bias
        clipped = ((z < self.lo) | (z > self.hi)).reshape(len(x), -1).sum(1)
        np.clip(z, self.lo, self.hi, out=z)
        return z, clipped

    def unnormalize(self, z: np.ndarray) -> np.ndarray:
        return z * self.inv_gain + self.inv_bias  # constant dims: gain 0, so they decode to q01
