"""Write any episode source into a shard dataset: in parallel processes, resumably, with statistics.

The source's episodes [0, N) are split once into contiguous parts (recorded in progress/plan.json); each
part is written by one process into its own shards `<card>-<part>-<seq>.tar`. A shard counts as finished
when its sidecar `progress/<shard>.json` exists (written after the tar was renamed into place), so a re-run
resumes every part after its last finished shard and deletes whatever a killed run left half-written.
The manifest, stats.json and <card>.md are written last; a directory with a manifest is complete.
One command writes a directory at a time (it holds progress/lock); a full disk stops it with one line, its
half-written shard deleted, and the same command resumes once there is space.

Engines run the parts: `local` (processes on this machine, the default) or `ray` (one Ray task per part, on a
cluster: ray_engine.py). Both write the same plan with the same `write_part`, so their output is byte-identical.

Memory is bounded by one shard per process: episodes stream from the source into the tar, and statistics
keep exact moments plus a bounded sample per shard (stats.py).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import queue
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from unified_action.atomic import atomic_write_bytes, atomic_write_json, writing
from unified_action.cards import DataCard, load_card, parse_card
from unified_action.data.dataset import MANIFEST, ShardDataset, open_dataset
from unified_action.data.episode import Episode
from unified_action.data.frames import DEFAULT_ASPECT
from unified_action.data.shards import (
    DEFAULT_BLOCK_STEPS,
    LAYOUT_VERSION,
    SHARD_RE,
    ShardInfo,
    ShardWriter,
    episode_to_sample,
    npy_bytes,
)
from unified_action.data.stats import merge_stats, native_labels, shard_summary
from unified_action.errors import DataError, did_you_mean
from unified_action.processes import parent_death_signal

Log = Callable[[str], None]
PROGRESS = "progress"
LOCK = "lock"  # in progress/: held by the command writing the dataset (output_lock)
ENGINES = ("local", "ray")


@dataclass(frozen=True)
class SourceSpec:
    """Where episodes come from; plain data, so worker processes can rebuild the reader from it."""

    card_path: str
    kind: str  # 'sim' (record from the card's simulator), 'rlds', 'lerobot' or 'shards'
    root: str | None = None  # the RLDS / LeRobot / shard dataset directory
    episodes: int | None = None  # sim: how many to record; other kinds: read at most this many
    steps: int = 200  # sim: steps per episode (fewer where the env ends the episode)
    seed: int = 0
    style: str = "smooth"  # sim: behaviour policy for continuous actions ('smooth' or 'waypoint')

    def card(self) -> DataCard:
        return open_dataset(self.root).card if self.kind == "shards" else load_card(self.card_path)

    def count(self) -> int:
        if self.kind == "sim":
            return int(self.episodes or 0)
        n = {"rlds": lambda: _rlds().count_episodes(self.card(), self.root),
             "lerobot": lambda: _lerobot().count_episodes(self.card(), self.root),
             "shards": lambda: open_dataset(self.root).episodes}[self.kind]()
        return n if self.episodes is None else min(n, self.episodes)

    def read(self, start: int, stop: int) -> Iterator[Episode]:
        card = self.card()
        if self.kind == "sim":
            from unified_action.sims import record_episodes

            return record_episodes(card, range(start, stop), self.steps, self.seed, self.style)
        if self.kind == "rlds":
            return _rlds().read_episodes(card, self.root, start, stop)
        if self.kind == "lerobot":
            return _lerobot().read_episodes(card, self.root, start, stop)
        return open_dataset(self.root).iter_episodes(start, stop)


def _rlds():
    from unified_action.data import rlds

    return rlds


def _lerobot():
    from unified_action.data import lerobot

    return lerobot


@dataclass(frozen=True)
class WriteSettings:
    image_size: tuple[int, int] | None = (64, 64)  # None keeps the source's size
    image_format: str = "zlib"  # frame codec: 'zlib' or 'png' (lossless), or 'jpeg' (shards.py, blocks.py)
    jpeg_quality: int = 95
    shard_bytes: int = 64 << 20
    aspect: str = DEFAULT_ASPECT  # a camera of another aspect ratio than image_size: 'pad', 'crop' or 'stretch' (frames.py)
    block_steps: int = DEFAULT_BLOCK_STEPS  # steps per frame block member


def source_kind(card: DataCard) -> str:
    return {"gymnasium": "sim", "robosuite": "sim", "rlds": "rlds", "lerobot": "lerobot"}.get(card.header.source.type, card.header.source.type)


# ----------------------------------------------------------------------------------------- one part
def _finished(out: Path, card: str, part: int) -> list[dict]:
    pat = re.compile(rf"^{re.escape(card)}-{part:04d}-\d{{5}}\.tar\.json$")
    return [json.loads(p.read_text()) for p in sorted((out / PROGRESS).glob("*.tar.json")) if pat.match(p.name)]


def _clean_part(out: Path, card: str, part: int, finished: list[dict]) -> None:
    """Delete what a killed run of this part left: temporary files, and tars renamed without their sidecar."""
    keep = {f["name"] for f in finished}
    for p in list(out.glob(f"{card}-{part:04d}-*.tar*")) + list((out / PROGRESS).glob(f"{card}-{part:04d}-*.tmp")):
        if p.name.endswith(".tmp") or p.name not in keep:
            p.unlink()


def write_part(spec: SourceSpec, out: Path, part: int, start: int, stop: int, settings: WriteSettings,
               progress: Callable[[int], None] = lambda n: None) -> None:
    """Write episodes [start, stop) of the source as shards of this part, after its last finished shard."""
    card = spec.card()
    finished = _finished(out, card.name, part)
    _clean_part(out, card.name, part, finished)
    resume = max((e for f in finished for e in f["episodes"]), default=start - 1) + 1
    progress(resume - start)

    def on_shard(info: ShardInfo, rows: np.ndarray) -> None:
        summary, sample = shard_summary(card, rows, seed=info.episodes[0])
        atomic_write_bytes(out / PROGRESS / (info.name + ".sample.npy"), npy_bytes(sample))
        atomic_write_json(out / PROGRESS / (info.name + ".json"), {**info.to_json(), "summary": summary})

    writer = ShardWriter(out, card.name, part, settings.shard_bytes, first_seq=len(finished), on_shard=on_shard)
    for ep in spec.read(resume, stop):
        writer.write(episode_to_sample(ep, card, settings.image_format, settings.image_size, settings.jpeg_quality,
                                       settings.aspect, settings.block_steps), ep.native_actions(card))
        progress(1)
    writer.close()


_PROGRESS = None  # a worker's queue of progress counts (set by _worker_init)


def _worker_init(parent: int, q) -> None:
    global _PROGRESS
    _PROGRESS = q
    die_with_parent(parent)


def die_with_parent(parent: int) -> None:
    """Make this worker process die with its parent: a SIGKILLed `uact data record` must not leave simulators
    writing shards for minutes. Linux: the kernel sends SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG);
    everywhere: a watchdog thread exits once the parent is gone (the worker is re-parented)."""
    parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _run_part(args) -> None:
    spec, out, part, start, stop, settings = args
    write_part(spec, out, part, start, stop, settings, progress=lambda n: n and _PROGRESS.put(n))


# ----------------------------------------------------------------------------------------- the dataset
def write_dataset(spec: SourceSpec, out: str | Path, *, workers: int = 2, settings: WriteSettings = WriteSettings(),
                  overwrite: bool = False, progress: bool = True, log: Log = lambda _: None,
                  engine: str = "local", address: str | None = None) -> ShardDataset:
    """Write (or finish writing) the source's episodes as a shard dataset in `out`; returns it opened.

    `engine` runs the parts: 'local' (processes here) or 'ray' (Ray tasks; `address` HOST:PORT joins a cluster,
    None starts Ray on this machine). `workers` is the number of parts either way, so the shards depend on it,
    never on the engine."""
    out = Path(out)
    card = spec.card()  # the card, the source and the engine are checked before --overwrite deletes anything
    n = spec.count()
    if n == 0:
        raise DataError(f"{spec.root or spec.card_path}: no episodes to write")
    # writing(out): a full disk anywhere below (a worker's shard, a sidecar, the manifest) is one line naming it
    with _engine(engine, address, workers) as run_parts, writing(out):
        if overwrite and out.exists():
            check_overwrite(out, spec)
        (out / PROGRESS).mkdir(parents=True, exist_ok=True)
        with output_lock(out):
            if overwrite:
                _clear(out)
            plan = _plan(out, spec, card, n, settings, workers)
            if (out / MANIFEST).is_file():
                log(f"{out}: complete, nothing to do")
                return open_dataset(out)
            bar = tqdm(total=n, desc=f"{card.name} -> shards", unit="ep", disable=not progress)
            try:
                run_parts(spec, out, plan["parts"], settings, bar)
            finally:
                bar.close()
            ds = _finalize(out, spec, card, plan)
    log(f"{out}: {ds.episodes} episodes in {len(ds.shards)} shards")
    return ds


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold `out/progress/lock` while writing into `out`: a second command writing the same directory would delete
    the first one's half-written shards as a killed run's debris (write_part), so it is refused instead. The lock
    is the kernel's (flock): it goes with its process, however that ends."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(out / PROGRESS / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise DataError(f"{out}: another command is writing this dataset now (it holds {out / PROGRESS / LOCK}); "
                        f"wait for it to finish, or choose another --out") from None
    try:
        yield
    finally:
        lock.release()


def _clear(out: Path) -> None:
    """--overwrite: delete everything in `out` but the lock held while doing it (deleting the directory would let
    another command lock a new one beside us)."""
    for p in [*out.iterdir(), *(out / PROGRESS).iterdir()]:
        if p.name == PROGRESS and p.parent == out or p == out / PROGRESS / LOCK:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


@contextlib.contextmanager
def _engine(name: str, address: str | None, workers: int) -> Iterator[Callable]:
    """The runner of a plan's parts, `run(spec, out, parts, settings, bar)`. Ray is imported, and its cluster
    joined, here: a missing Ray or an unreachable --address is refused before anything is written or deleted."""
    if name not in ENGINES:
        raise DataError(f"--engine: '{name}'{did_you_mean(name, ENGINES)}; expected one of: {', '.join(ENGINES)}")
    if name == "local":
        if address is not None:
            raise DataError(f"--address {address}: only --engine ray joins a cluster; add --engine ray")
        yield lambda spec, out, parts, settings, bar: _run_local(spec, out, parts, settings, workers, bar)
        return
    from unified_action.data import ray_engine

    with ray_engine.connect(address, workers):
        yield lambda spec, out, parts, settings, bar: ray_engine.run_parts(write_part, spec, out, parts, settings, bar,
                                                                           lock_dir=out / PROGRESS)


def _run_local(spec: SourceSpec, out: Path, parts: list, settings: WriteSettings, workers: int, bar) -> None:
    # Simulators always run in worker processes: a MuJoCo GL context (Mesa's LLVM) and TensorFlow in one
    # process crash it, and the caller may go on to write an RLDS build.
    if (workers <= 1 or len(parts) == 1) and spec.kind != "sim":
        for p, (a, b) in enumerate(parts):
            write_part(spec, out, p, a, b, settings, progress=bar.update)
    else:
        _run_parallel(spec, out, parts, settings, max(1, workers), bar)


def _ours(name: str) -> bool:
    base = name.removesuffix(".tmp")
    return base in (MANIFEST, "stats.json", PROGRESS, "rlds") or base.endswith(".md") or SHARD_RE.match(base) is not None


def check_overwrite(out: Path, spec: SourceSpec) -> None:
    """--overwrite deletes `out` only if it is a dataset directory of ours that holds neither the card nor the source."""
    if not out.is_dir():
        raise DataError(f"{out}: not a directory; --overwrite deletes only a dataset directory")
    root = out.resolve()
    for p in (spec.card_path, spec.root):
        if p is not None and (Path(p).resolve() == root or root in Path(p).resolve().parents):
            raise DataError(f"{out}: holds {p}, an input of this conversion; --overwrite would delete it: choose another --out")
    foreign = sorted(p.name for p in out.iterdir() if not _ours(p.name))
    if foreign:
        raise DataError(f"{out}: holds '{foreign[0]}', which no dataset writes; --overwrite deletes only a dataset "
                        f"directory (manifest.json, shards, stats.json, progress/): choose another --out")


def _plan(out: Path, spec: SourceSpec, card: DataCard, n: int, settings: WriteSettings, workers: int) -> dict:
    """The split into parts is made once; a re-run with other settings is refused rather than mixed in."""
    want = {"source": asdict(spec) | {"card_path": None}, "card_sha256": card.content_hash, "episodes": n,
            "settings": json.loads(json.dumps(asdict(settings)))}
    path = out / PROGRESS / "plan.json"
    if path.is_file():
        plan = json.loads(path.read_text())
        for key, value in want.items():
            if plan.get(key) != value:
                raise DataError(f"{out}: {key}: this directory was written with {json.dumps(plan.get(key))[:120]}, "
                                f"not {json.dumps(value)[:120]}; use another --out or --overwrite")
        return plan
    k = max(1, min(n, workers))
    bounds = np.linspace(0, n, k + 1).round().astype(int)
    plan = {**want, "parts": [[int(a), int(b)] for a, b in zip(bounds[:-1], bounds[1:])]}
    atomic_write_json(path, plan)
    return plan


def _run_parallel(spec, out, parts, settings, workers, bar) -> None:
    # spawn, not fork: TensorFlow and simulators hold threads and GL contexts that do not survive a fork
    ctx = mp.get_context("spawn")
    q = ctx.Queue()  # handed to workers at their start: no Manager process, which would outlive a killed parent
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(), q)) as pool:
        pending = {pool.submit(_run_part, (spec, out, p, a, b, settings)) for p, (a, b) in enumerate(parts)}
        try:
            while pending:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(q, bar)
                for f in done:
                    f.result()  # a worker's DataError stops the run here, with its message
        except BaseException:
            for f in pending:
                f.cancel()
            raise
        _drain(q, bar)


def _drain(q, bar) -> None:
    while True:
        try:
            bar.update(q.get_nowait())
        except queue.Empty:
            return


def _finalize(out: Path, spec: SourceSpec, card: DataCard, plan: dict) -> ShardDataset:
    infos = [json.loads(p.read_text()) for p in sorted((out / PROGRESS).glob("*.tar.json"))]
    infos.sort(key=lambda i: (i["part"], i["name"]))
    seen = [e for i in infos for e in i["episodes"]]
    if len(seen) != plan["episodes"] or len(set(seen)) != len(seen):
        raise DataError(f"{out}: shards hold {len(seen)} episodes ({len(set(seen))} distinct), expected {plan['episodes']}")
    samples = [np.load(out / PROGRESS / (i["name"] + ".sample.npy"), allow_pickle=False) for i in infos]
    stats = merge_stats(card, [i["summary"] for i in infos], samples)
    card_text = card.text.rstrip("\n") + "\n\n" + dataset_section(card, infos, stats, plan)
    atomic_write_bytes(out / f"{card.name}.md", card_text.encode())
    atomic_write_json(out / "stats.json", stats)

    manifest = {
        "layout": LAYOUT_VERSION, "card": card.name, "embodiment": card.embodiment,
        "source_card_sha256": card.content_hash, "card_md_sha256": parse_card(card_text).content_hash,
        "source": {k: v for k, v in plan["source"].items() if v is not None}, "settings": plan["settings"],
        "episodes": len(seen), "steps": int(sum(sum(i["lengths"]) for i in infos)),
        "bytes": int(sum(i["bytes"] for i in infos)),
        "shards": [{k: i[k] for k in ("name", "episodes", "lengths", "bytes", "sha256", "part", "index") if k in i} for i in infos],
    }
    atomic_write_json(out / MANIFEST, manifest)
    return open_dataset(out)


def dataset_section(card: DataCard, infos: list[dict], stats: dict, plan: dict) -> str:
    """The Markdown appended to the dataset's card: size, the action mapping and the native statistics."""
    steps = sum(sum(i["lengths"]) for i in infos)
    size = sum(i["bytes"] for i in infos) / 2**20
    lines = ["## This dataset (written by `uact data`)", "",
             f"{plan['episodes']} episodes, {steps} steps, {len(infos)} shards, {size:.1f} MiB; "
             f"frames {plan['settings']['image_format']}"
             + (f" at {plan['settings']['image_size'][0]}x{plan['settings']['image_size'][1]}" if plan["settings"]["image_size"] else "")
             + (f", one every {card.header.frame_every} steps (source.frame_every)" if card.header.frame_every != 1 else "")
             + ".", "", "### Action mapping and statistics (native units)", "",
             "| native dim | slot(s) | transform | mean | std | min | max | q01 | q99 |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    nat = stats["native"]
    labels = native_labels(card)
    targets = card.mapping.native_targets()  # per native dim, also for fields split into parts
    for d, label in enumerate(labels):
        slots, tf = targets[d]
        lines.append(f"| `{label}` | {slots} | {tf} | " + " | ".join(f"{nat[k][d]:.4g}" for k in ("mean", "std", "min", "max", "q01", "q99")) + " |")
    return "\n".join(lines) + "\n"
