"""Fit an embodiment's tokenizer from its card and episodes: statistics, what its kind learns, held-out report."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from unified_action import __version__
from unified_action.cards import DataCard
from unified_action.errors import DataError
from unified_action.tokenization.episodes import chunk_episode, window_starts
from unified_action.tokenization.kinds import get_kind, longest_sequence, require_valid_card
from unified_action.tokenization.kinds.fast import FEW_CHUNKS, LENGTH_MARGIN, LENGTH_SLACK, SCALE_LADDER, choose_scale
from unified_action.tokenization.normalization import Stats
from unified_action.tokenization.tokenizer import ActionTokenizer, TokenizerSpec
from unified_action.tokenization.vocabulary import VOCAB_VERSION

# Kept importable from here, where they used to live: the fast kind owns them now.
__all__ = ["FEW_CHUNKS", "LENGTH_MARGIN", "LENGTH_SLACK", "MAX_TRAIN_CHUNKS", "SCALE_LADDER", "choose_scale", "chunks_of",
           "fit_tokenizer", "longest_sequence", "reconstruction_errors", "roundtrip_report", "split_episodes"]

MAX_TRAIN_CHUNKS = 20_000  # BPE training cost grows with this; 20k chunks train in seconds

Log = Callable[[str], None]


def split_episodes(episodes: list[np.ndarray], heldout_fraction: float) -> tuple[list, list]:
    """The last ceil(fraction * n) episodes are held out (none when there is a single episode)."""
    n_held = math.ceil(heldout_fraction * len(episodes)) if len(episodes) >= 2 and heldout_fraction > 0 else 0
    n_held = min(n_held, len(episodes) - 1)
    return episodes[: len(episodes) - n_held], episodes[len(episodes) - n_held:]


def chunks_of(episodes: list[np.ndarray], length: int, stride: int, limit: int | None = None,
              rng: np.random.Generator | None = None) -> np.ndarray:
    """Windows of every episode [N, length, D]; at most `limit`, sampled before any window is copied."""
    starts = [window_starts(len(e), length, stride) for e in episodes]
    total = sum(map(len, starts))
    if limit is not None and total > limit:
        keep = np.zeros(total, dtype=bool)
        keep[(rng or np.random.default_rng(0)).choice(total, limit, replace=False)] = True
        offsets = np.cumsum([0] + [len(s) for s in starts])
        starts = [[st for st, k in zip(s, keep[o: o + len(s)]) if k] for s, o in zip(starts, offsets)]
    return np.concatenate([chunk_episode(e, length, stride, s) for e, s in zip(episodes, starts) if s])


def fit_tokenizer(card: DataCard, episodes: list[np.ndarray], *, embodiment_token: int, bpe_start: int,
                  heldout_fraction: float = 0.1, seed: int = 0, log: Log = lambda _: None,
                  stats: Stats | None = None) -> tuple[ActionTokenizer, bytes | None]:
    """episodes: native actions [T, native_dim] each. -> (tokenizer, its kind's learned model bytes or None).

    The card's tokenizer section must fit its kind (CardError otherwise); the kind fits what it learns.
    `stats`: normalization statistics computed elsewhere over the whole dataset (a shard dataset's stats.json,
    written during conversion); by default they are computed from the training episodes."""
    require_valid_card(card)
    if not episodes:
        raise DataError(f"{card.name}: no episodes to fit on")
    params, mapping = card.header.tokenizer, card.mapping
    unified = []
    for e in episodes:
        u, outside = mapping.to_unified(e)
        if outside.any():
            raise DataError(f"{card.name}: {int(outside.sum())} native values are outside the card's action table")
        unified.append(u)
    train, heldout = split_episodes(unified, heldout_fraction)
    T = params.chunk_length
    if stats is None:
        stats = Stats.compute(mapping.slot_names, np.concatenate(train))
        log(f"statistics over {stats.count} steps of {len(train)} episodes ({len(heldout)} held out)")
    elif list(stats.slots) != mapping.slot_names:
        raise DataError(f"{card.name}: statistics are for slots {list(stats.slots)}, the card maps to {mapping.slot_names}")
    else:
        log(f"statistics given over {stats.count} steps; fitting on {len(train)} episodes ({len(heldout)} held out)")
    rng = np.random.default_rng(seed)
    chunks = chunks_of(train, T, max(1, T // 4), limit=MAX_TRAIN_CHUNKS, rng=rng)
    num_classes = tuple(s.num_classes for s in mapping.slots)
    spec = TokenizerSpec(
        name=card.name, embodiment=card.embodiment, embodiment_token=embodiment_token, kind=params.kind,
        chunk_length=T, slots=tuple(mapping.slot_names), slot_ids=tuple(s.id for s in mapping.slots),
        num_classes=num_classes, max_tokens=0, action_space_version=card.header.action_space_version,
        vocab_version=VOCAB_VERSION, card_sha256=card.content_hash,
        agents=mapping.agents, agent_dims=mapping.agent_dims,
    )
    kind = get_kind(params.kind)
    spec, model = kind.fit(spec, kind.read_params(params.sections), chunks, stats, bpe_start=bpe_start, rng=rng, log=log)
    tok = ActionTokenizer(replace(spec, max_tokens=kind.length_bound(spec)), stats, model, card)
    padded = tok.min_length if tok.framing else tok.kind.padded_length(chunks)  # agents: every chunk has one length
    tok = ActionTokenizer(replace(tok.spec, max_tokens=padded), stats, model, card)
    report = roundtrip_report(tok, chunks_of(heldout or train, T, T))
    report["measured_on"] = "held-out episodes" if heldout else "training episodes (only one episode was given)"
    report["created_with"] = f"unified-action {__version__}"
    log(f"held-out round trip: {report['tokens_mean']:.1f} tokens/chunk, normalized RMSE {report['rmse_normalized']:.4f}")
    tok = ActionTokenizer(replace(tok.spec, heldout=report), stats, model, card)
    return tok, model


def reconstruction_errors(tok: ActionTokenizer, chunks: np.ndarray, decoded: np.ndarray, valid: np.ndarray) -> dict:
    """Errors of decoded [N, T, D] against chunks, both in unified units, over the valid items.

    `rmse_normalized` is measured in the clipped normalized space (q01..q99 -> [-1, 1]): the tokenizer's
    own quantization error. `rmse_normalized_unclipped` also counts what values beyond q01..q99 lose.
    """
    cont = tok.continuous
    x, y = chunks[valid], decoded[valid]
    if not len(x):  # every item invalid (e.g. all overflowed): no error to measure, and "invalid" says why
        return {"rmse_normalized": float("nan"), "max_abs_error_normalized": float("nan"),
                "rmse_normalized_unclipped": float("nan"), "rmse_slot_units": {s: float("nan") for s in tok.spec.slots},
                "discrete_exact": False}
    zx, _ = tok.normalizer.normalize(x)
    zy, _ = tok.normalizer.normalize(y)
    err_n = (zy - zx)[..., cont]
    raw = ((y - x) * tok.normalizer.gain)[..., cont]
    per_slot = np.sqrt(np.mean((y - x) ** 2, axis=(0, 1))) if len(x) else np.full(tok.dim, np.nan)
    return {
        "rmse_normalized": float(np.sqrt(np.mean(err_n**2))) if err_n.size else 0.0,
        "max_abs_error_normalized": float(np.abs(err_n).max()) if err_n.size else 0.0,
        "rmse_normalized_unclipped": float(np.sqrt(np.mean(raw**2))) if raw.size else 0.0,
        "rmse_slot_units": {s: float(v) for s, v in zip(tok.spec.slots, per_slot)},
        "discrete_exact": bool(np.all((y - x)[..., ~cont] == 0)),
    }


def roundtrip_report(tok: ActionTokenizer, chunks: np.ndarray) -> dict:
    """Tokens per chunk and reconstruction error of chunks [N, T, D] in unified units."""
    enc = tok.encode(chunks)
    dec = tok.decode(enc.tokens)
    return {
        "chunks": int(len(chunks)),
        "tokens_mean": float(enc.mask.sum(1).mean()),
        "tokens_max": int(enc.mask.sum(1).max()),
        **reconstruction_errors(tok, chunks, dec.actions, dec.valid),
        "clipped_fraction": float(enc.clipped.sum() / chunks.size),
        "invalid": int((~dec.valid).sum()),
        "overflow": int(enc.overflow.sum()),
    }
