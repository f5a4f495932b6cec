"""Per-dimension statistics computed while shards are written, in memory bounded by one shard.

Each finished shard contributes exact moments (count, mean, M2, min, max) and a uniform sample of at most
SAMPLE_ROWS of its action rows; merging combines moments exactly (Chan et al.'s parallel variance) and
takes q01/q99 from the union of the samples, each row weighted by how many rows it stands for. Quantiles
are therefore exact while a shard holds at most SAMPLE_ROWS steps, and a close estimate beyond.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from unified_action.cards import DataCard
from unified_action.cards.mapping import field_size
from unified_action.tokenization.normalization import Stats

SAMPLE_ROWS = 4096


@dataclass
class Moments:
    count: int
    mean: np.ndarray
    m2: np.ndarray
    min: np.ndarray
    max: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> Moments:
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(0)
        return cls(len(x), mean, ((x - mean) ** 2).sum(0), x.min(0), x.max(0))

    def merge(self, o: Moments) -> Moments:
        n = self.count + o.count
        delta = o.mean - self.mean
        return Moments(n, self.mean + delta * o.count / n, self.m2 + o.m2 + delta**2 * self.count * o.count / n,
                       np.minimum(self.min, o.min), np.maximum(self.max, o.max))

    def to_json(self) -> dict:
        return {"count": self.count, **{k: getattr(self, k).tolist() for k in ("mean", "m2", "min", "max")}}

    @classmethod
    def from_json(cls, d: dict) -> Moments:
        return cls(int(d["count"]), *(np.asarray(d[k], dtype=np.float64) for k in ("mean", "m2", "min", "max")))


def sample_rows(x: np.ndarray, seed: int) -> np.ndarray:
    if len(x) <= SAMPLE_ROWS:
        return x
    return x[np.sort(np.random.default_rng(seed).choice(len(x), SAMPLE_ROWS, replace=False))]


def shard_summary(card: DataCard, native: np.ndarray, seed: int) -> tuple[dict, np.ndarray]:
    """-> (moments of native and unified values as JSON, the sampled native rows)."""
    unified, _ = card.mapping.to_unified(native)
    return {"native": Moments.of(native).to_json(), "unified": Moments.of(unified).to_json()}, sample_rows(native, seed)


def _weighted_quantiles(x: np.ndarray, w: np.ndarray, qs: tuple[float, ...]) -> np.ndarray:
    """Per-column weighted quantiles (inverted CDF, numpy's default for unweighted data with equal weights)."""
    out = np.empty((len(qs), x.shape[1]))
    for d in range(x.shape[1]):
        order = np.argsort(x[:, d], kind="stable")
        cw = np.cumsum(w[order])
        for i, q in enumerate(qs):
            out[i, d] = x[order[min(np.searchsorted(cw, q * cw[-1]), len(order) - 1)], d]
    return out


def merge_stats(card: DataCard, summaries: list[dict], samples: list[np.ndarray]) -> dict:
    """Combine shard summaries into stats.json: {'native': {...}, 'unified': Stats.to_json()}."""
    out = {}
    weights = [np.full(len(s), m["native"]["count"] / max(1, len(s))) for m, s in zip(summaries, samples)]
    x, w = np.concatenate(samples), np.concatenate(weights)
    values = {"native": x, "unified": card.mapping.to_unified(x)[0]}
    labels = {"native": native_labels(card), "unified": card.mapping.slot_names}
    for space in ("native", "unified"):
        m = Moments.from_json(summaries[0][space])
        for s in summaries[1:]:
            m = m.merge(Moments.from_json(s[space]))
        if all(m["native"]["count"] == len(s) for m, s in zip(summaries, samples)):
            q01, q99 = np.quantile(values[space], [0.01, 0.99], axis=0)  # every row kept: exact, as Stats.compute
        else:
            q01, q99 = _weighted_quantiles(values[space], w, (0.01, 0.99))
        stats = Stats(tuple(labels[space]), m.count, m.mean, np.sqrt(m.m2 / max(1, m.count)), m.min, m.max, q01, q99)
        out[space] = stats.to_json()
    return out


def native_labels(card: DataCard) -> list[str]:
    """One label per native dimension: 'action/world_vector[0]', or the path itself for a scalar field."""
    labels = []
    for f in card.header.action:
        n = field_size(f)
        labels += [f.path] if n == 1 else [f"{f.path}[{i}]" for i in range(n)]
    return labels
