"""Benchmark the data pipeline: conversion throughput, and training clips/s of ClipLoader against reading RLDS directly.

One run, on one dataset recorded from a real simulator (CarRacing-v3, 16 episodes x 200 steps, frames
stored as 64x64 PNG; recorded once and cached under benchmarks/results/cache/):

1. conversion: simulator -> shards (2 processes; from the cache after the first run), shards -> shards
   with 1 and 2 processes (decode + PNG re-encode + tar), shards -> RLDS (`write_rlds`, TFRecord), and
   RLDS -> shards with 2 processes (TensorFlow reading in each process);
2. the card's tokenizer registered from the shards into a registry in the cache;
3. ClipLoader clips/s with 0 and 2 DataLoader workers (2 context + 6 future frames, batch 16), whole
   epochs until at least --clips clips, timed after a warm-up batch (worker start-up of later epochs
   included), and with 2 workers in one long epoch (`epoch_clips`: no worker restart);
4. the "RLDS direct" baseline: the same clips (same starts, frames and action chunks, same tokenizer) cut
   from the RLDS build read with tensorflow-datasets, naively (one pipeline, steps iterated one by one)
   and tuned (tf.data interleave with parallel calls + prefetch, each episode's steps batched), in a
   spawned process (TensorFlow never enters the process that forks loader workers).
   Target: loader with 2 workers >= 3x RLDS direct (naive).
Each clips/s figure is the best of --rounds runs in alternating order (the machine may be shared), with
the CPU time per clip (all threads and worker processes) and the cores other processes used meanwhile.

Run:  MUJOCO_GL=egl .venv/bin/python benchmarks/data.py [--clips 2000] [--rounds 3] [--no-cache]
Writes benchmarks/results/data.json; see benchmarks/README.md ("Data pipeline") for the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from unified_action.cards import load_card  # noqa: E402
from unified_action.data.convert import SourceSpec, WriteSettings, write_dataset  # noqa: E402
from unified_action.data.dataset import ShardDataset, open_dataset  # noqa: E402
from unified_action.data.shards import iter_samples, resize_frames, sample_actions, sample_frames  # noqa: E402
from unified_action.tokenization import Registry  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CARD = ROOT / "data_cards" / "carracing.md"
EPISODES, STEPS, SIZE = 16, 200, (64, 64)
CONTEXT, FUTURE, BATCH = 2, 6, 16
TARGET = 3.0  # loader (2 workers) / RLDS direct
NAIVE, TUNED = "RLDS direct (tfds, naive)", "RLDS direct (tf.data tuned)"


def rate(n_eps: int, n_steps: int, sec: float) -> dict:
    return dict(seconds=round(sec, 2), episodes=n_eps, steps=n_steps, episodes_per_s=round(n_eps / sec, 2), steps_per_s=round(n_steps / sec, 1))


def convert(spec: SourceSpec, out: Path, workers: int, small: int = 0) -> dict:
    """Write the source with `workers` processes; with `small`, also write its first `small` episodes, and
    derive the steady rate (the difference of the two runs) and the fixed start-up cost (process spawn, imports)."""
    figs = []
    for n in ([small] if small else []) + [spec.episodes]:
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        ds = write_dataset(replace(spec, episodes=n), out, workers=workers, settings=WriteSettings(image_size=SIZE), progress=False)
        figs.append(rate(ds.episodes, ds.manifest["steps"], time.perf_counter() - t0) | dict(workers=workers))
    fig = figs[-1]
    if small:
        d_steps, d_t = fig["steps"] - figs[0]["steps"], fig["seconds"] - figs[0]["seconds"]
        startup = figs[0]["seconds"] - figs[0]["steps"] * d_t / d_steps
        if d_t > 0 and startup >= 0:  # else the machine's load changed between the runs: no estimate
            fig |= dict(steady_steps_per_s=round(d_steps / d_t, 1), startup_s=round(startup, 2))
        fig["small_run"] = figs[0]
    return fig


def recorded(cache: Path, use_cache: bool, log) -> tuple[ShardDataset, dict]:
    """The simulator recording (cached with its timing), opened."""
    shards, info = cache / "shards", cache / "record.json"
    if use_cache and info.is_file() and (shards / "manifest.json").is_file():
        log(f"recording: from the cache {shards}")
        return open_dataset(shards), json.loads(info.read_text()) | dict(cached=True)
    log(f"recording {EPISODES} x {STEPS} steps of {CARD.name} with 2 processes...")
    shutil.rmtree(cache / "registry", ignore_errors=True)  # fitted on the episodes recorded before
    fig = convert(SourceSpec(str(CARD), "sim", episodes=EPISODES, steps=STEPS, seed=0), shards, 2)
    info.write_text(json.dumps(fig | dict(recorded_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))) + "\n")
    return open_dataset(shards), fig | dict(cached=False)


def _write_rlds_job(shards: str, out: str) -> float:
    """Run in a spawned process, so that the parent never imports TensorFlow before forking loader workers."""
    from unified_action.data.rlds import write_rlds

    ds = open_dataset(shards)
    t0 = time.perf_counter()
    write_rlds(load_card(CARD), ds.iter_episodes(), out, file_format="tfrecord")
    return time.perf_counter() - t0


def cpu_s() -> float:
    """CPU seconds of this process (all its threads) and of its finished children (loader workers)."""
    r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def busy_s() -> float:
    """CPU seconds all processes of the machine have used (Linux /proc/stat): with cpu_s, the load of others."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def usage(start: float, cpu0: float, busy0: float, clips: int) -> dict:
    """CPU ms per clip of the reader (its threads and workers), and the cores others used meanwhile."""
    cpu, wall = cpu_s() - cpu0, time.perf_counter() - start
    return dict(cpu_ms_per_clip=round(1e3 * cpu / clips, 3), other_load_cores=round((busy_s() - busy0 - cpu) / wall, 2))


def loader_rate(cfg, workers: int, min_clips: int) -> dict:
    from unified_action.data.loader import ClipLoader

    loader = ClipLoader(cfg, rank=0, world_size=1, num_workers=workers)
    clips, epochs, t0, start, cpu0, busy0 = 0, 0, None, time.perf_counter(), cpu_s(), busy_s()
    while clips < min_clips:
        for batch in loader:
            if t0 is None:  # warm-up batch: worker start-up, first shard read
                t0, first = time.perf_counter(), time.perf_counter() - start
                continue
            clips += len(batch["key"])
        epochs += 1
    dt = time.perf_counter() - t0
    return dict(workers=workers, clips=clips, epochs=epochs, seconds=round(dt, 2), clips_per_s=round(clips / dt, 1),
                first_batch_s=round(first, 2), skipped=loader.skipped) | usage(start, cpu0, busy0, clips + cfg.batch_size)


def cut_clips(frames: np.ndarray, actions: np.ndarray, tok, max_tokens: int, span: int, stride: int):
    """The loader's clips of one episode, in episode order: (frames [F, h, w, 3], tokens [F, max_tokens])."""
    L = tok.spec.chunk_length
    for s in range(0, len(actions) - span + 1, stride):
        steps = s + np.arange(CONTEXT + FUTURE)
        tb = tok.encode_native(np.stack([actions[t:t + L] for t in steps]), max_tokens)
        yield resize_frames(frames[steps], SIZE), tb.tokens


def rlds_rate(bdir: str, registry: str, camera: str, span: int, stride: int, min_clips: int, tuned: bool) -> dict:
    """Run in a spawned process: TensorFlow's threads stay out of the process that forks the loader's workers."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    [name] = Registry(registry).names()
    tok = Registry(registry).load(name)
    max_tokens = tok.spec.max_tokens
    ds = tfds.builder_from_directory(str(bdir)).as_dataset(split="train")
    if tuned:  # whole episodes as batched tensors, decoded and read ahead by tf.data's own threads
        ds = ds.interleave(lambda ep: ep["steps"].batch(1024), cycle_length=2, num_parallel_calls=tf.data.AUTOTUNE,
                           deterministic=True).prefetch(tf.data.AUTOTUNE)
    clips, epochs, t0, start, batch, cpu0, busy0 = 0, 0, None, time.perf_counter(), [], cpu_s(), busy_s()
    while clips < min_clips:
        for ep in tfds.as_numpy(ds):
            if tuned:
                frames, actions = ep["observation"][camera], ep["action"].astype(np.float64)
            else:  # what the RLDS examples do: iterate the nested steps dataset
                steps = list(ep["steps"])
                frames = np.stack([s["observation"][camera] for s in steps])
                actions = np.stack([s["action"] for s in steps]).astype(np.float64)
            for clip in cut_clips(frames, actions, tok, max_tokens, span, stride):
                batch.append(clip)
                if len(batch) == BATCH:
                    np.stack([f for f, _ in batch]), np.stack([t for _, t in batch])  # collate
                    batch = []
                    if t0 is None:
                        t0, first = time.perf_counter(), time.perf_counter() - start
                    else:
                        clips += BATCH
        epochs += 1
    dt = time.perf_counter() - t0
    return dict(clips=clips, epochs=epochs, seconds=round(dt, 2), clips_per_s=round(clips / dt, 1),
                first_batch_s=round(first, 2), versions=dict(tensorflow=tf.__version__, tensorflow_datasets=tfds.__version__)
                ) | usage(start, cpu0, busy0, clips + BATCH)


def breakdown(ds: ShardDataset, camera: str, tok, max_tokens: int, span: int, stride: int) -> dict:
    """Where one stream's time goes, per clip, in one process: tar read, action checks, PNG decode, tokenization."""
    F, L, sec = CONTEXT + FUTURE, tok.spec.chunk_length, {}

    def timed(name: str, fn):
        t = time.perf_counter()
        out = fn()
        sec[name] = time.perf_counter() - t
        return out

    samples = timed("tar_read", lambda: [s for sh in ds.shards for s in iter_samples(sh.url)])
    actions = timed("action_check", lambda: [sample_actions(s, ds.card, s["__key__"]) for s in samples])
    starts = [(i, s) for i, a in enumerate(actions) for s in range(0, len(a) - span + 1, stride)]
    timed("png_decode", lambda: [sample_frames(samples[i], camera, range(s, s + F), "bench") for i, s in starts])
    timed("tokenize", lambda: [tok.encode_native(np.stack([actions[i][u:u + L] for u in range(s, s + F)]), max_tokens)
                               for i, s in starts])
    return dict(clips_per_epoch=len(starts)) | {f"{k}_ms": round(1e3 * v / len(starts), 3) for k, v in sec.items()}


def machine() -> dict:
    import PIL
    import torch

    return dict(cpu_count=os.cpu_count(), cpus_usable=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                processor=platform.processor() or platform.machine(), platform=platform.platform(),
                python=sys.version.split()[0], numpy=np.__version__, torch=torch.__version__, pillow=PIL.__version__,
                load_avg_1min=round(os.getloadavg()[0], 2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=2000, help="clips per clips/s measurement (whole epochs, at least this many)")
    ap.add_argument("--rounds", type=int, default=3, help="clips/s measurements per reader, order alternated; the best is kept")
    ap.add_argument("--no-cache", action="store_true", help="record the simulator episodes again")
    ap.add_argument("--out", type=Path, default=RESULTS / "data.json")
    args = ap.parse_args(argv)

    import webdataset  # noqa: F401  (its first import takes ~1 s: not part of the 1-process conversion timed below)
    from rich.console import Console
    from rich.table import Table

    from unified_action.data.loader import LoaderConfig, MixtureEntry

    console = Console(width=None if sys.stdout.isatty() else 200)
    log = console.log
    started, load = time.perf_counter(), os.getloadavg()[0]
    key = hashlib.sha256(f"{CARD.read_text()}|{EPISODES}|{STEPS}|{SIZE}".encode()).hexdigest()[:12]
    cache = RESULTS / "cache" / f"data-{CARD.stem}-{key}"
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="uact-bench-data-"))
    conv: dict = {}
    try:
        ds, conv["sim -> shards"] = recorded(cache, not args.no_cache, log)
        for w in (1, 2):
            log(f"shards -> shards, {w} process(es)...")
            conv[f"shards -> shards ({w}w)"] = convert(SourceSpec(str(CARD), "shards", root=str(ds.root), episodes=ds.episodes),
                                                       tmp / f"s{w}", w, small=2)
        log("shards -> RLDS (write_rlds, tfrecord, in a spawned process)...")
        pool = mp.get_context("spawn").Pool(1)
        seconds = pool.apply(_write_rlds_job, (str(ds.root), str(tmp / "rlds")))
        pool.close(), pool.join()
        conv["shards -> RLDS (1w)"] = rate(ds.episodes, ds.manifest["steps"], seconds) | dict(workers=1)
        log("RLDS -> shards, 2 processes...")
        conv["RLDS -> shards (2w)"] = convert(SourceSpec(str(CARD), "rlds", root=str(tmp / "rlds"), episodes=ds.episodes),
                                              tmp / "r2", 2, small=2)

        registry = cache / "registry"
        if ds.card.name not in Registry(registry).names():
            log("registering the tokenizer...")
            Registry(registry).register(ds.card, list(ds.iter_actions()))
        tok = Registry(registry).load(ds.card.name)
        cfg = LoaderConfig(datasets=(MixtureEntry(str(ds.root)),), registry=str(registry), context_frames=CONTEXT,
                           future_frames=FUTURE, image_size=SIZE, batch_size=BATCH)
        span = (cfg.frames - 1) * 1 + tok.spec.chunk_length
        stride, max_tokens, camera = max(1, span // 2), tok.spec.max_tokens, ds.card.header.cameras[0].name
        prof = breakdown(ds, camera, tok, max_tokens, span, stride)
        bdir = str(next((tmp / "rlds").glob("*/*/dataset_info.json")).parent)
        long_epoch = replace(cfg, epoch_clips=-(-args.clips // 2) + BATCH)  # no worker restart at epoch ends
        pool = mp.get_context("spawn").Pool(1)  # the RLDS readers run there
        pool.apply(int, (0,))  # started (imports done) before anything is timed
        readers = {"ClipLoader (0 workers)": lambda: loader_rate(cfg, 0, args.clips),
                   "ClipLoader (2 workers)": lambda: loader_rate(cfg, 2, args.clips),
                   "ClipLoader (2 workers, one long epoch)": lambda: loader_rate(long_epoch, 2, args.clips),
                   NAIVE: lambda: pool.apply(rlds_rate, (bdir, str(registry), camera, span, stride, args.clips, False)),
                   TUNED: lambda: pool.apply(rlds_rate, (bdir, str(registry), camera, span, stride, args.clips, True))}
        runs: dict = {k: [] for k in readers}
        for r in range(args.rounds):  # alternate the order, keep each reader's best round
            for k in list(readers)[::1 if r % 2 == 0 else -1]:
                log(f"round {r + 1}/{args.rounds}: {k}...")
                runs[k].append(readers[k]())
        pool.close(), pool.join()
        reads = {k: max(v, key=lambda x: x["clips_per_s"]) | dict(rounds=[x["clips_per_s"] for x in v]) for k, v in runs.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    loader2, naive, tuned_rate = (reads[k]["clips_per_s"] for k in ("ClipLoader (2 workers)", NAIVE, TUNED))
    ratio, ratio_tuned = loader2 / naive, loader2 / tuned_rate
    t1 = Table(title=f"conversion: {ds.episodes} episodes, {ds.manifest['steps']} steps of {ds.card.name}, 64x64 PNG")
    for c in ("path", "processes", "seconds", "episodes/s", "steps/s", "steady steps/s", "start-up s"):
        t1.add_column(c, justify="left" if c == "path" else "right")
    for k, v in conv.items():
        cached = " (cached)" if v.get("cached") else ""
        t1.add_row(k.split(" (")[0] + cached, str(v["workers"]), f"{v['seconds']:.1f}", f"{v['episodes_per_s']:.2f}",
                   f"{v['steps_per_s']:,.0f}", f"{v['steady_steps_per_s']:,.0f}" if "startup_s" in v else "-",
                   f"{v['startup_s']:.1f}" if "startup_s" in v else "-")
    t2 = Table(title=f"training clips ({CONTEXT}+{FUTURE} frames, chunk {tok.spec.chunk_length}, batch {BATCH}): "
                     f"{prof['clips_per_epoch']} clips per epoch")
    for c in ("reader", "clips", "seconds", "clips/s (best)", "all rounds", "loader(2w) / this", "CPU ms/clip", "others' load"):
        t2.add_column(c, justify="left" if c == "reader" else "right")
    for k, v in reads.items():
        t2.add_row(k, str(v["clips"]), f"{v['seconds']:.2f}", f"{v['clips_per_s']:,.0f}", " ".join(f"{x:,.0f}" for x in v["rounds"]),
                   f"{loader2 / v['clips_per_s']:.2f}x", f"{v['cpu_ms_per_clip']:.2f}", f"{v['other_load_cores']:.2f}")
    console.print(t1)
    console.print(t2)
    console.print("loader time per clip, one stream (ms): " + ", ".join(f"{k} {v}" for k, v in prof.items() if k.endswith("_ms"))
                  + f"; total at 0 workers {1e3 / reads['ClipLoader (0 workers)']['clips_per_s']:.3f}")
    met = ratio >= TARGET
    console.print(f"[{'green' if met else 'red'}]{'MET' if met else 'NOT MET'}[/] loader (2 workers) >= {TARGET}x RLDS "
                  f"direct: {ratio:.2f}x (vs tf.data tuned: {ratio_tuned:.2f}x)")

    result = dict(benchmark="data", timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  seconds=round(time.perf_counter() - started, 1),
                  machine=machine() | reads[NAIVE].pop("versions") | reads[TUNED].pop("versions") | dict(load_avg_1min_at_start=round(load, 2)),
                  dataset=dict(card=ds.card.name, episodes=ds.episodes, steps=ds.manifest["steps"], image_size=list(SIZE),
                               bytes=ds.manifest["bytes"], shards=len(ds.shards), cache=str(cache.relative_to(ROOT))),
                  clip=dict(context_frames=CONTEXT, future_frames=FUTURE, frame_stride=1, chunk_length=tok.spec.chunk_length,
                            span=span, clip_stride=stride, max_tokens=max_tokens, batch_size=BATCH, min_clips=args.clips),
                  conversion=conv, clips=reads, loader_breakdown_ms_per_clip=prof,
                  target=dict(target=f"loader (2 workers) >= {TARGET}x RLDS direct", ratio=round(ratio, 2),
                              ratio_vs_tuned=round(ratio_tuned, 2), met=met))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    console.print(f"wrote {args.out} in {result['seconds']:.0f} s (1-min load average at start: {load:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
