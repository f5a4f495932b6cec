"""Benchmark the action tokenizers: `bin`, `fast` and the OpenVLA per-dimension 256-bin baseline.

Datasets (native actions recorded from the real simulators' action spaces under seeded behaviour policies):

- ALOHA insertion (gym_aloha, bimanual, 14 continuous dims): min-jerk waypoint motion sampled from the
  env's action space (scripted-demonstration-like; the env is not stepped, it renders at ~7 steps/s here).
- CarRacing (driving, 3 continuous dims): the real env stepped under a smooth random policy.
- ALE Pong (game, 18 discrete actions -> 5 gamepad buttons): the real env stepped, sticky random actions.
- highway-fast (driving, 5 discrete meta-actions), when its card exists: the real env stepped.

For every dataset the card's own tokenizer kind is registered into a temporary registry; for continuous
datasets both a `bin` and a `fast` variant are registered (the card's `kind:` edited in memory). The
registry holds out the last 10% of episodes; every figure below is measured on those held-out episodes
(accuracy: non-overlapping chunks; speed: a batch of 1024 chunks sampled from stride-1 windows).

Run:  .venv/bin/python benchmarks/tokenizers.py [--quick] [--no-cache] [--only aloha,carracing]
Writes benchmarks/results/tokenizers.json (and .md, the table as Markdown); recorded episodes are cached
under benchmarks/results/cache/ (keyed by card text and recording settings), so a re-run skips the
simulators. See benchmarks/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from unified_action import __version__  # noqa: E402
from unified_action.cards import DataCard, load_card, parse_card  # noqa: E402
from unified_action.sims import record_actions  # noqa: E402
from unified_action.tokenization import ActionTokenizer, Registry  # noqa: E402
from unified_action.tokenization.fitting import chunks_of, reconstruction_errors, split_episodes  # noqa: E402
from unified_action.tokenization.kinds import get_kind, kind_names, require_valid_card  # noqa: E402
from unified_action.tokenization.normalization import Normalizer, Stats  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CARDS = ROOT / "data_cards"
RESULTS = ROOT / "benchmarks" / "results"
HELDOUT_FRACTION = 0.1  # the registry's default: the last 10% of episodes are held out
BATCH = 1024  # chunks per timed encode/decode call
REPEATS = 5  # timing: best of this many calls, after one warm-up call
BASELINE = "256-bin/dim (OpenVLA)"
TARGET_TOKEN_RATIO = 5.0
TARGET_RMSE = 0.01
TARGET_RATE = 20_000.0


@dataclass(frozen=True)
class Dataset:
    key: str
    card: str  # data_cards/<card>.md
    domain: str
    episodes: int
    steps: int
    step_env: bool
    style: str = "smooth"
    quick: tuple[int, int] = (4, 100)  # (episodes, steps) under --quick
    optional: bool = False  # skipped with a note when its card is missing

    def size(self, quick: bool) -> tuple[int, int]:
        return self.quick if quick else (self.episodes, self.steps)


DATASETS = (
    Dataset("aloha", "gym_aloha_insertion", "robot: bimanual ALOHA, min-jerk waypoints", 100, 500, False,
            "waypoint", quick=(20, 200)),
    Dataset("carracing", "carracing", "driving: CarRacing, continuous", 30, 300, True, quick=(4, 120)),
    Dataset("pong", "ale_pong", "game: ALE Pong, 18 actions", 30, 300, True, quick=(6, 120)),
    Dataset("highway", "highway_fast", "driving: highway-fast, meta-actions", 30, 40, True, quick=(4, 20),
            optional=True),
)


# ------------------------------------------------------------------------------------------ data


def record(ds: Dataset, card: DataCard, quick: bool, use_cache: bool) -> tuple[list[np.ndarray], bool]:
    """-> (native action episodes, read from the cache?). Recorded in groups so tqdm can show progress; the
    seeds are those of one record_actions call over all episodes (episode e uses seed e)."""
    episodes, steps = ds.size(quick)
    params = dict(episodes=episodes, steps=steps, seed=0, step_env=ds.step_env, style=ds.style)
    key = hashlib.sha256((card.text + json.dumps(params, sort_keys=True)).encode()).hexdigest()[:12]
    cache = RESULTS / "cache" / f"{ds.card}-{key}.npz"
    if use_cache and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return [z[f"ep{i:04d}"] for i in range(episodes)], True
    group = episodes if not ds.step_env else max(1, episodes // 10)
    out: list[np.ndarray] = []
    what = "stepping" if ds.step_env else "sampling the action space of"
    with tqdm(total=episodes, desc=f"{what} {card.header.source.env_id}", unit="ep", leave=False) as bar:
        for start in range(0, episodes, group):
            n = min(group, episodes - start)
            out += record_actions(card, n, steps, seed=start, step_env=ds.step_env, style=ds.style)
            bar.update(n)
    if use_cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp.npz")
        np.savez(tmp, **{f"ep{i:04d}": e for i, e in enumerate(out)})
        os.replace(tmp, cache)
    return out, False


def with_kind(card: DataCard, kind: str) -> DataCard:
    """The card with the `kind:` of its tokenizer section replaced, parsed from the edited text."""
    if card.header.tokenizer.kind == kind:
        return card
    text = card.text
    section = re.search(r"^tokenizer:", text, re.M)
    found = re.compile(r"\bkind:\s*([a-z]+)\b").search(text, section.end()) if section else None
    if found is None or found.group(1) != card.header.tokenizer.kind:
        raise SystemExit(f"{card.name}: cannot find the tokenizer kind in the card header")
    edited = require_valid_card(parse_card(text[: found.start(1)] + kind + text[found.end(1):], f"{card.name}.md (kind: {kind})"))
    assert edited.header.tokenizer.kind == kind and edited.mapping.slot_names == card.mapping.slot_names
    return edited


# ------------------------------------------------------------------------------------------ baseline


class PerDimensionBins:
    """OpenVLA's action tokenizer: each dimension of each step is one of 256 uniform bins over [-1, 1]
    after q01/q99 normalization (the same statistics and normalizer as ours); decoding returns bin centres."""

    NUM_BINS = 256

    def __init__(self, stats: Stats):
        self.normalizer = Normalizer(stats, np.ones(len(stats.q01), dtype=bool))

    def encode(self, x: np.ndarray) -> np.ndarray:
        """[B, T, D] unified units -> [B, T*D] bin indices 0..255."""
        z, _ = self.normalizer.normalize(x)
        idx = np.floor((z + 1.0) * (self.NUM_BINS / 2.0)).astype(np.int64)
        np.minimum(idx, self.NUM_BINS - 1, out=idx)
        return idx.reshape(len(x), -1)

    def decode(self, tokens: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        z = -1.0 + (tokens.reshape(len(tokens), *shape) + 0.5) * (2.0 / self.NUM_BINS)
        return self.normalizer.unnormalize(z)


# ------------------------------------------------------------------------------------------ measuring


def best_rate(fn, n: int, repeats: int) -> float:
    """Items per second of fn() over n items: best of `repeats` calls after a warm-up call."""
    fn()
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def accuracy(tok: ActionTokenizer, card: DataCard, chunks: np.ndarray, decoded: np.ndarray, valid: np.ndarray) -> dict:
    """The registry's error figures (fitting.reconstruction_errors) plus the benchmark's own: RMSE over the
    continuous slots in slot and native units, and exact-match rates for discrete slots."""
    cont, disc = tok.continuous, ~tok.continuous
    x, y = chunks[valid], decoded[valid]
    out = reconstruction_errors(tok, chunks, decoded, valid)
    if cont.any():
        out.update(
            rmse_unified=float(np.sqrt(np.mean((y - x)[..., cont] ** 2))),
            rmse_native=float(np.sqrt(np.mean((card.mapping.to_native(y) - card.mapping.to_native(x)) ** 2))),
        )
    else:
        for k in ("rmse_normalized", "max_abs_error_normalized", "rmse_normalized_unclipped"):
            out[k] = None  # no continuous slot: '-' in the table
    if disc.any():
        # Discrete slots: the value decoded as it would be used (binary: >= 0.5, categorical: nearest class).
        binary = tok.num_classes[disc] == 2
        used = np.where(binary, y[..., disc] >= 0.5, np.rint(y[..., disc]))
        same = used == x[..., disc]
        out.update(exact_match_chunks=float(same.reshape(len(x), -1).all(1).mean()), exact_match_values=float(same.mean()))
    return out


def measure_ours(tok: ActionTokenizer, card: DataCard, chunks: np.ndarray, batch: np.ndarray, repeats: int) -> dict:
    enc = tok.encode(chunks)
    dec = tok.decode(enc.tokens)
    specials = tok.kind.framing  # <bos> <emb> [<sep>] <eos>
    fit = ~enc.overflow
    total = enc.mask.sum(1)
    payload = total[fit] - specials
    enc_b = tok.encode(batch)
    tokens_b = enc_b.tokens
    halves = [batch[: len(batch) // 2], batch[len(batch) // 2:]]
    with ThreadPoolExecutor(2) as pool:  # both cores: numpy and sentencepiece release the GIL
        two_threads = best_rate(lambda: list(pool.map(lambda h: tok.decode(tok.encode(h).tokens), halves)), len(batch), repeats)
    rates = dict(
        encode_chunks_per_s=best_rate(lambda: tok.encode(batch), len(batch), repeats),
        decode_chunks_per_s=best_rate(lambda: tok.decode(tokens_b), len(batch), repeats),
        roundtrip_2threads_chunks_per_s=two_threads,
    )
    return dict(
        kind=tok.spec.kind,
        tokens_payload_mean=float(payload.mean()) if len(payload) else float("nan"),
        tokens_payload_max=int(payload.max()) if len(payload) else 0,
        tokens_total_mean=float(total.mean()),
        padded_length=int(tok.spec.max_tokens),
        invalid=int((~dec.valid).sum()),
        overflow=int(enc.overflow.sum()),
        clipped_fraction=float(enc.clipped.sum() / chunks.size),
        **accuracy(tok, card, chunks, dec.actions, dec.valid),
        **rates,
        batch_tokens_payload_mean=float(enc_b.mask.sum(1).mean() - specials),
        fast_scale=tok.spec.fast_scale,
        bpe_size=tok.spec.bpe_size,
        registry_heldout_report={k: tok.spec.heldout.get(k) for k in ("chunks", "tokens_mean", "rmse_normalized", "invalid", "overflow")},
    )


def measure_baseline(tok: ActionTokenizer, card: DataCard, chunks: np.ndarray, batch: np.ndarray, repeats: int) -> dict:
    base = PerDimensionBins(tok.stats)
    shape = chunks.shape[1:]
    tokens = base.encode(chunks)
    decoded = base.decode(tokens, shape)
    tokens_b = base.encode(batch)
    n = int(np.prod(shape))
    _, clipped = base.normalizer.normalize(chunks)
    return dict(
        kind="baseline",
        tokens_payload_mean=float(n),
        tokens_payload_max=n,
        tokens_total_mean=float(n),
        padded_length=n,
        invalid=0,
        overflow=0,
        clipped_fraction=float(clipped.sum() / chunks.size),
        **accuracy(tok, card, chunks, decoded, np.ones(len(chunks), bool)),
        encode_chunks_per_s=best_rate(lambda: base.encode(batch), len(batch), repeats),
        decode_chunks_per_s=best_rate(lambda: base.decode(tokens_b, shape), len(batch), repeats),
        batch_tokens_payload_mean=float(tokens_b.shape[1]),
    )


@dataclass
class Row:
    dataset: str
    tokenizer: str
    card_kind: bool  # the kind the shipped card registers
    chunk: tuple[int, int]
    metrics: dict = field(default_factory=dict)

    def finish(self, baseline_tokens: float) -> None:
        m = self.metrics
        m["token_ratio_vs_baseline"] = baseline_tokens / m["tokens_payload_mean"] if m["tokens_payload_mean"] else float("nan")
        m["roundtrip_chunks_per_s"] = 1.0 / (1.0 / m["encode_chunks_per_s"] + 1.0 / m["decode_chunks_per_s"])


def run_dataset(ds: Dataset, quick: bool, use_cache: bool, repeats: int, tmp_root: Path, log) -> tuple[list[Row], dict]:
    card = load_card(CARDS / f"{ds.card}.md")
    t0 = time.perf_counter()
    episodes, cached = record(ds, card, quick, use_cache)
    record_s = time.perf_counter() - t0
    # every registered kind that can carry this card's slots (bin and fast for continuous cards, discrete else)
    kinds = [k for k in kind_names() if get_kind(k).check_slots(card.mapping.slots) is None]
    unified = [card.mapping.to_unified(e)[0] for e in episodes]
    train, held = split_episodes(unified, HELDOUT_FRACTION)  # what Registry.register holds out
    T = card.header.tokenizer.chunk_length
    chunks = chunks_of(held, T, T)  # accuracy: non-overlapping held-out chunks (+ one ending at each episode's end)
    windows = chunks_of(held, T, 1)  # speed: a batch sampled from every held-out window
    rng = np.random.default_rng(0)
    pick = rng.choice(len(windows), BATCH, replace=False) if len(windows) >= BATCH else np.resize(rng.permutation(len(windows)), BATCH)
    batch = windows[pick]
    info = dict(card=ds.card, env_id=card.header.source.env_id, domain=ds.domain, embodiment=card.embodiment,
                episodes=len(episodes), steps_total=int(sum(len(e) for e in episodes)), step_env=ds.step_env,
                policy=ds.style if any(s.num_classes == 0 for s in card.mapping.slots) else "sticky random",
                train_episodes=len(train), heldout_episodes=len(held), eval_chunks=int(len(chunks)),
                timing_batch=BATCH, timing_windows_available=int(len(windows)), chunk_length=T,
                slots=card.mapping.slot_names, slot_units=[s.units for s in card.mapping.slots], native_dim=card.mapping.native_dim,
                baseline_tokens_on_native_dims=T * card.mapping.native_dim, record_seconds=None if cached else round(record_s, 2), from_cache=cached,
                card_kind=card.header.tokenizer.kind)
    rows, fitted = [], {}
    for kind in kinds:
        variant = with_kind(card, kind)
        reg = Registry(tempfile.mkdtemp(prefix=f"{ds.key}-{kind}-", dir=tmp_root))
        t0 = time.perf_counter()
        tok = reg.register(variant, episodes, heldout_fraction=HELDOUT_FRACTION, seed=0)
        fit_s = time.perf_counter() - t0
        fitted[kind] = tok
        row = Row(ds.key, kind, kind == card.header.tokenizer.kind, (T, tok.dim))
        row.metrics = measure_ours(tok, variant, chunks, batch, repeats)
        row.metrics["fit_seconds"] = round(fit_s, 2)
        # The registry measured its own held-out report on the same episodes and chunks: the figures must agree.
        reported = tok.spec.heldout
        row.metrics["matches_registry_report"] = bool(
            reported.get("chunks") == len(chunks) and math.isclose(reported.get("tokens_mean", -1), row.metrics["tokens_total_mean"])
            and math.isclose(reported.get("rmse_normalized", -1), row.metrics.get("rmse_normalized") or 0.0, abs_tol=1e-12))
        rows.append(row)
        log(f"{ds.key}: registered and measured '{kind}' ({fit_s:.1f} s to fit)")
    tok = next(iter(fitted.values()))  # every variant has the same statistics (same training episodes)
    base = Row(ds.key, BASELINE, False, (T, tok.dim))
    base.metrics = measure_baseline(tok, card, chunks, batch, repeats)
    rows.append(base)
    for r in rows:
        r.finish(base.metrics["tokens_payload_mean"])
    return rows, info


# ------------------------------------------------------------------------------------------ reporting


def _f(x, spec: str, none: str = "-") -> str:
    return none if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


COLUMNS = ("dataset", "tokenizer", "T x D", "tokens/chunk", "padded len", "ratio vs 256-bin", "RMSE norm.",
           "RMSE native", "clipped", "exact match", "encode/s", "decode/s", "enc+dec/s", "enc+dec/s 2 threads")


def table_rows(rows: list[Row]) -> list[list[str]]:
    out = []
    for r in rows:
        m = r.metrics
        out.append([
            r.dataset, r.tokenizer + (" *" if r.card_kind else ""), f"{r.chunk[0]} x {r.chunk[1]}",
            _f(m["tokens_payload_mean"], ".1f"), str(m["padded_length"]), _f(m["token_ratio_vs_baseline"], ".2f") + "x",
            _f(m.get("rmse_normalized"), ".4f"), _f(m.get("rmse_unified"), ".4f"), _f(m.get("clipped_fraction"), ".1%"),
            _f(m.get("exact_match_chunks"), ".1%"),
            _f(m["encode_chunks_per_s"], ",.0f"), _f(m["decode_chunks_per_s"], ",.0f"), _f(m["roundtrip_chunks_per_s"], ",.0f"),
            _f(m.get("roundtrip_2threads_chunks_per_s"), ",.0f"),
        ])
    return out


def markdown(rows: list[Row]) -> str:
    right = set(range(2, len(COLUMNS)))
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---:" if i in right else "---" for i in range(len(COLUMNS))) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in table_rows(rows)]
    return "\n".join(lines) + "\n"


def targets(rows: list[Row], infos: dict) -> list[dict]:
    """The issue's targets, checked per continuous dataset."""
    out = []
    for key in infos:
        by = {r.tokenizer: r.metrics for r in rows if r.dataset == key}
        if "fast" in by:
            m = by["fast"]
            ok = m["token_ratio_vs_baseline"] >= TARGET_TOKEN_RATIO and m["rmse_normalized"] <= TARGET_RMSE
            out.append(dict(dataset=key, target=f"fast >= {TARGET_TOKEN_RATIO:g}x fewer tokens than 256-bin/dim at normalized RMSE <= {TARGET_RMSE}",
                            met=bool(ok), value=f"{m['token_ratio_vs_baseline']:.2f}x at RMSE {m['rmse_normalized']:.4f}"))
        ours = [k for k in by if k in kind_names()]  # our kinds' rows, not the baseline's
        for kind in sorted(ours, key=lambda k: (k != "fast", k)):  # fast first, as the table has always listed it
            rt = by[kind]["roundtrip_chunks_per_s"]
            out.append(dict(dataset=key, target=f"{kind} encode + decode >= {TARGET_RATE:,.0f} chunks/s",
                            met=bool(rt >= TARGET_RATE), value=f"{rt:,.0f} chunks/s"))
    return out


def machine() -> dict:
    import scipy
    import sentencepiece

    return dict(cpu_count=os.cpu_count(), cpus_usable=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                processor=platform.processor() or platform.machine(), platform=platform.platform(),
                python=sys.version.split()[0], numpy=np.__version__, scipy=scipy.__version__,
                sentencepiece=sentencepiece.__version__, unified_action=__version__)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small datasets and 3 timing repeats: a sanity run in seconds")
    ap.add_argument("--only", default="", help="comma-separated dataset keys: " + ",".join(d.key for d in DATASETS))
    ap.add_argument("--no-cache", action="store_true", help="re-record episodes instead of reading benchmarks/results/cache/")
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default benchmarks/results/tokenizers[-quick].json)")
    args = ap.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 200)
    out = args.out or RESULTS / ("tokenizers-quick.json" if args.quick else "tokenizers.json")
    repeats = 3 if args.quick else REPEATS
    wanted = {k for k in args.only.split(",") if k}
    unknown = wanted - {d.key for d in DATASETS}
    if unknown:
        ap.error(f"unknown dataset(s) {sorted(unknown)}; known: {[d.key for d in DATASETS]}")
    started = time.perf_counter()
    rows: list[Row] = []
    infos: dict = {}
    skipped: dict = {}
    tmp_root = Path(tempfile.mkdtemp(prefix="uact-bench-"))
    try:
        for ds in DATASETS:
            if wanted and ds.key not in wanted:
                continue
            if not (CARDS / f"{ds.card}.md").is_file():
                if not ds.optional:
                    raise SystemExit(f"{CARDS / (ds.card + '.md')}: missing data card")
                skipped[ds.key] = f"data_cards/{ds.card}.md not found"
                console.log(f"skipping {ds.key}: {skipped[ds.key]}")
                continue
            r, info = run_dataset(ds, args.quick, not args.no_cache, repeats, tmp_root, console.log)
            rows += r
            infos[ds.key] = info
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)

    table = Table(title=f"action tokenizers on held-out chunks ({'quick' if args.quick else 'full'} run; * = the card's kind)")
    for i, col in enumerate(COLUMNS):
        table.add_column(col, justify="left" if i < 2 else "right")
    prev = None
    for r, cells in zip(rows, table_rows(rows)):
        if prev is not None and r.dataset != prev:
            table.add_section()
        prev = r.dataset
        table.add_row(*cells)
    console.print(table)
    checks = targets(rows, infos)
    for c in checks:
        console.print(f"[{'green' if c['met'] else 'red'}]{'MET' if c['met'] else 'NOT MET'}[/] {c['dataset']}: {c['target']}: {c['value']}")

    result = dict(
        benchmark="tokenizers",
        timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        quick=args.quick,
        seconds=round(time.perf_counter() - started, 1),
        machine=machine(),
        settings=dict(heldout_fraction=HELDOUT_FRACTION, timing_batch=BATCH, timing_repeats=repeats,
                      timing="best of repeats after one warm-up call; chunks/s = batch / seconds",
                      tokens="payload tokens per chunk: <bos>, <embodiment>, <sep>, <eos> and <pad> excluded"),
        datasets=infos,
        skipped=skipped,
        results=[dict(dataset=r.dataset, tokenizer=r.tokenizer, card_kind=r.card_kind, chunk=list(r.chunk), **r.metrics) for r in rows],
        targets=checks,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(rows))
    console.print(f"wrote {out} and {out.with_suffix('.md')} in {result['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
