"""The training loader: clips from a weighted mixture of shard datasets, deterministic and resumable.

A clip is `context_frames + future_frames` frames of one camera, `frame_stride` steps apart, and for every
frame the action chunk that starts at it as tokens from
the shared vocabulary, with their mask, slot ids and time steps; plus the embodiment token, the control
frequency and the instruction.

A dataset whose frames are stored only every k steps (its card's source.frame_every; Episode.frame_every) needs
a frame stride that is a multiple of k (refused otherwise, when the loader is made); its clips start at multiples
of k (clip_stride rounded up to one), so every frame a clip shows is stored: step t is the camera's entry t // k.

Determinism and exact resume, without a shuffle buffer to save:
- Each dataset's epoch is a plan computed from its manifest alone: shards in a seeded random order, and
  the clips of each shard in a seeded random order. The plan is cut into equal contiguous ranges, one
  per stream (rank x worker); the remainder (< streams clips) waits for the next epoch's shuffle.
- A stream draws its next clip's dataset from the mixture weights with an RNG keyed by (seed, stream,
  batch index), then takes that dataset's next clip in its range, reading only the shards it overlaps.
- The state of a stream is a few integers per dataset (plan epoch, position) plus its batch counter.
  Each batch carries its stream's state; the loader keeps the last one seen per stream, so
  `state_dict()` describes exactly what the training loop consumed, prefetching notwithstanding.
- Every stream yields the same number of clips per epoch, so every rank gets the same number of batches
  and collective training never waits on a rank that ran out.

Broken input (a truncated, empty or non-tar shard; a sample missing a key; a wrong dtype or shape; an
action outside the card's range): strict mode raises DataError naming the shard and the key; lenient
mode skips the broken clips, counts them, warns once per shard, and fills the epoch from the clips that
follow, so counts per rank stay equal.
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from unified_action.data.blocks import block_member, blocks_for
from unified_action.data.dataset import ShardDataset, expand_urls, open_dataset, read_samples
from unified_action.data.frames import DEFAULT_ASPECT, check_aspect, resize_frames
from unified_action.data.shards import check_complete, members_of, sample_actions, sample_frames, sample_meta
from unified_action.errors import DataError, UnifiedActionError, did_you_mean
from unified_action.tokenization import Registry

STATE_VERSION = 1


@dataclass(frozen=True)
class MixtureEntry:
    path: str  # dataset directory (or its manifest.json)
    weight: float = 1.0
    shards: str | None = None  # brace pattern / '::'-joined URLs replacing the local shard files
    camera: str | None = None  # default: the card's first camera
    # environment steps between consecutive frames of a clip; default (and the only value allowed) the tokenizer's
    # chunk length, so a frame's chunk is exactly the actions between it and the next frame
    frame_stride: int | None = None
    episodes: tuple[int, int] | None = None  # only episodes [start, stop) in manifest order (few-shot / held-out splits)
    # the registered tokenizer that encodes this dataset's actions (its normalization, its embodiment token); default
    # the one the dataset's card names. Another embodiment's is accepted only when its card maps the same native
    # layout onto the same slots (tokenization/sharing.py): the zero-shot probe of a held-out embodiment
    tokenizer: str | None = None


@dataclass(frozen=True)
class LoaderConfig:
    datasets: tuple[MixtureEntry, ...]
    registry: str | None = None  # tokenizers; default $UACT_TOKENIZERS or ./tokenizers
    context_frames: int = 2
    future_frames: int = 6
    image_size: tuple[int, int] = (64, 64)
    aspect: str = DEFAULT_ASPECT  # frames stored at another aspect ratio than image_size: 'pad', 'crop' or 'stretch'
    clip_stride: int | None = None  # steps between clip starts in an episode; default half a clip's span
    batch_size: int = 8
    seed: int = 0
    strict: bool = True
    allow_pipe: bool = False
    epoch_clips: int | None = None  # clips per stream per epoch; default one pass over every dataset's range
    max_action_tokens: int | None = None  # default: the longest padded length among the mixture's tokenizers

    @property
    def frames(self) -> int:
        return self.context_frames + self.future_frames


# ----------------------------------------------------------------------------------------- planning
def frame_stride(root, name: str, asked: int | None, chunk_length: int) -> int:
    """Steps between a clip's frames: the tokenizer's chunk length, so a frame's chunk is exactly the actions up to
    the next frame; a job asking for another stride is refused."""
    if asked is not None and asked != chunk_length:
        raise DataError(f"{root}: frame_stride {asked}: frames must be one action chunk apart, and tokenizer '{name}' "
                        f"encodes chunks of {chunk_length} steps (the card's tokenizer.chunk_length is the frame stride: "
                        f"set it there and register again, or leave frame_stride unset)")
    return chunk_length


def check_frame_every(root, stride: int, every: int) -> None:
    """A clip's frames, `stride` steps apart from a start that is a multiple of `every`, must all be stored frames."""
    if stride % every:
        raise DataError(f"{root}: frame_stride {stride} is not a multiple of the dataset's frame_every {every} (its "
                        f"frames are stored every {every} steps): register its tokenizer with a chunk_length that is "
                        f"a multiple of {every}, or record the dataset with a frame_every that divides {stride}")


def aligned_clip_stride(stride: int, every: int) -> int:
    """Steps between clip starts, rounded up to a multiple of `every`: starts from 0 then land on stored frames."""
    return -(-stride // every) * every


def clip_span(frames: int, chunk_length: int) -> int:
    """Steps a clip of `frames` frames covers, one chunk apart, its last frame's chunk included."""
    return frames * chunk_length


def shared_tokenizer(ds: ShardDataset, name: str, registry: Registry):
    """Another embodiment's registered tokenizer to encode the actions of `ds` (MixtureEntry.tokenizer), refused in
    one line unless its card maps the same native layout onto the same slots as the dataset's card."""
    from unified_action.tokenization.sharing import layout_problem

    if name not in registry.names():
        raise DataError(f"{ds.root}: tokenizer: '{name}' is not registered in {registry.root}"
                        f"{did_you_mean(name, registry.names())}")
    tok = registry.load(name)
    problem = "its tokenizer was registered without a data card" if tok.card is None else \
        layout_problem(ds.card.mapping, tok.card.mapping)
    if problem:
        raise DataError(f"{ds.root}: tokenizer '{name}' cannot encode the actions of '{ds.card.name}': {problem}")
    return tok


class DatasetPlan:
    """One dataset's clips and its per-epoch order, computed from the manifest."""

    def __init__(self, index: int, entry: MixtureEntry, cfg: LoaderConfig, registry: Registry, n_streams: int):
        self.index, self.entry, self.cfg = index, entry, cfg
        self.ds: ShardDataset = open_dataset(entry.path, expand_urls(entry.shards) if entry.shards else None)
        card = self.ds.card
        if entry.tokenizer is not None and entry.tokenizer != card.name:
            self.tok = shared_tokenizer(self.ds, entry.tokenizer, registry)
        else:
            if card.name not in registry.names():
                raise DataError(f"{self.ds.root}: tokenizer '{card.name}' is not registered in {registry.root}; "
                                f"run `uact tokenizer register {self.ds.root / (card.name + '.md')} --data {self.ds.root}`")
            self.tok = registry.load(card.name)
            if self.tok.card is not None and self.tok.card.header.action != card.header.action:
                raise DataError(f"{self.ds.root}: tokenizer '{card.name}' was fitted on a card with another action mapping; "
                                f"register it again from {self.ds.root / (card.name + '.md')}")
        cams = [c.name for c in card.header.cameras]
        self.camera = entry.camera or (cams[0] if cams else None)
        if self.camera not in cams:
            raise DataError(f"{self.ds.root}: camera '{self.camera}' is not in the card (cameras: {cams})")
        L = self.tok.spec.chunk_length
        self.stride = frame_stride(self.ds.root, self.tok.name, entry.frame_stride, L)
        self.frame_every = self.ds.frame_every
        check_frame_every(self.ds.root, self.stride, self.frame_every)
        self.span = clip_span(cfg.frames, L)
        stride = aligned_clip_stride(cfg.clip_stride or max(1, self.span // 2), self.frame_every)
        lo, hi = entry.episodes or (0, self.ds.episodes)
        if not 0 <= lo < hi <= self.ds.episodes:
            raise DataError(f"{self.ds.root}: episodes: [{lo}, {hi}) is not a non-empty range within the dataset's "
                            f"{self.ds.episodes} episodes")
        first = np.cumsum([0] + [len(sh.lengths) for sh in self.ds.shards])  # global index of each shard's first episode
        # per shard: (episode position in shard, start step) of every clip
        self.items = [[(e, s) for e, T in enumerate(sh.lengths) if lo <= first[k] + e < hi
                       for s in range(0, T - self.span + 1, stride)]
                      for k, sh in enumerate(self.ds.shards)]
        self.total = sum(map(len, self.items))
        self.per_stream = self.total // n_streams
        if self.per_stream == 0:
            raise DataError(f"{self.ds.root}: {self.total} clips of {self.span} steps, fewer than the {n_streams} "
                            f"streams (ranks x workers); record longer or more episodes, or lower the clip length")

    def _rng(self, *key: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, self.index, *key])

    def shard_order(self, epoch: int) -> np.ndarray:
        return self._rng(epoch).permutation(len(self.items))

    def item_order(self, epoch: int, shard: int) -> np.ndarray:
        return self._rng(epoch, shard, 1).permutation(len(self.items[shard]))

    def range_of(self, stream: int) -> tuple[int, int]:
        return stream * self.per_stream, (stream + 1) * self.per_stream


# ----------------------------------------------------------------------------------------- one stream
@dataclass
class StreamState:
    batches: int = 0  # batches this stream has produced since the start (keys the mixture RNG)
    epoch_clips: int = 0  # clips produced in the current loader epoch
    positions: dict = field(default_factory=dict)  # dataset index -> [plan epoch, position in the stream's range]
    skipped: dict = field(default_factory=lambda: {"clips": 0, "samples": 0, "shards": 0})

    def to_json(self) -> dict:
        return {"batches": self.batches, "epoch_clips": self.epoch_clips,
                "positions": {str(k): list(v) for k, v in self.positions.items()}, "skipped": dict(self.skipped)}

    @classmethod
    def from_json(cls, d: dict) -> StreamState:
        return cls(int(d["batches"]), int(d["epoch_clips"]), {int(k): list(v) for k, v in d["positions"].items()},
                   dict(d["skipped"]))


class Stream:
    """Clips of one stream (a rank's worker), in batches, from its state on."""

    def __init__(self, plans: list[DatasetPlan], cfg: LoaderConfig, stream: int, state: StreamState, epoch_len: int,
                 max_tokens: int):
        self.plans, self.cfg, self.stream, self.state = plans, cfg, stream, state
        self.epoch_len, self.max_tokens = epoch_len, max_tokens
        self.weights = np.asarray([p.entry.weight for p in plans], dtype=np.float64)
        self.weights /= self.weights.sum()
        self._iters = {}
        self._warned: set[str] = set()

    def batches(self):
        """Yield (batch dict, state JSON after it) until this stream's epoch is complete."""
        while self.state.epoch_clips < self.epoch_len:
            n = min(self.cfg.batch_size, self.epoch_len - self.state.epoch_clips)
            rng = np.random.default_rng([self.cfg.seed, self.stream, self.state.batches, 7])
            choice = rng.choice(len(self.plans), size=n, p=self.weights)
            clips = [self._next_clip(int(d)) for d in choice]
            self._tokenize(clips)
            self.state.batches += 1
            self.state.epoch_clips += n
            yield collate(clips), self.state.to_json()

    def _tokenize(self, clips: list[dict]) -> None:
        """Each clip's action windows as tokens: one tokenizer call per dataset in the batch (a call costs about as
        much for one clip's chunks as for a batch's)."""
        for d in {c["dataset"] for c in clips}:
            mine = [c for c in clips if c["dataset"] == d]
            windows = np.stack([c.pop("windows") for c in mine])  # [n, F, L, native_dim]
            n, F = windows.shape[:2]
            tb = self.plans[d].tok.encode_native(windows.reshape(n * F, *windows.shape[2:]), self.max_tokens)
            for i, c in enumerate(mine):
                rows = slice(i * F, (i + 1) * F)
                c.update(action_tokens=tb.tokens[rows], action_mask=tb.mask[rows], action_slots=tb.slots[rows].astype(np.int32),
                         action_steps=tb.steps[rows].astype(np.int32), action_agents=tb.agents[rows].astype(np.int32),
                         action_overflow=tb.overflow[rows])

    # -- per dataset
    def _next_clip(self, d: int) -> dict:
        if d not in self._iters:
            self._iters[d] = self._clips(d)
        return next(self._iters[d])

    def _clips(self, d: int):
        """Endless clips of dataset d from this stream's range, epoch after epoch, from the saved position on."""
        plan = self.plans[d]
        lo, hi = plan.range_of(self.stream)
        pos = self.state.positions.setdefault(d, [0, 0])
        while True:
            epoch, delivered, whole = pos[0], 0, pos[1] == 0  # whole: this pass covers the stream's entire range
            order = plan.shard_order(epoch)
            starts = np.concatenate([[0], np.cumsum([len(plan.items[k]) for k in order])])
            for j, k in enumerate(order):
                a, b = max(lo + pos[1], starts[j]), min(hi, starts[j + 1])
                if a >= b:
                    continue
                order = plan.item_order(epoch, int(k))[a - starts[j]:b - starts[j]]
                wanted: dict[int, set[int]] = {}  # episode position -> the steps its clips show
                for i in order:
                    e, start = plan.items[k][i]
                    wanted.setdefault(e, set()).update(range(start, start + self.cfg.frames * plan.stride, plan.stride))
                samples = self._read_shard(plan, int(k), wanted)
                for i in order:
                    pos[1] += 1  # advanced before yielding: the state saved with a batch points past its clips
                    clip = self._make_clip(plan, int(k), samples, *plan.items[k][i])
                    if clip is not None:
                        delivered += 1
                        yield clip
            if delivered == 0 and whole and hi > lo:  # lenient mode, everything broken: another pass would loop forever
                raise DataError(f"{plan.ds.root}: lenient mode: no usable clip in this stream's {hi - lo} clips of epoch "
                                f"{epoch} (skipped so far: {self.state.skipped}); every shard it reads is broken")
            pos[0], pos[1] = epoch + 1, 0

    def _broken(self, err: DataError, url: str, what: str) -> None:
        if self.cfg.strict:
            raise err
        self.state.skipped[what] += 1
        if url not in self._warned:  # once per shard: a broken shard must not flood the log
            self._warned.add(url)
            warnings.warn(f"lenient mode, skipping: {err}", stacklevel=2)

    def _read_shard(self, plan: DatasetPlan, k: int, wanted: dict[int, set[int]]) -> dict[int, dict | DataError]:
        """The wanted samples of shard k (by position), each a sample dict or the DataError that makes it unusable.
        Through the shard's index, only the blocks of frames that the clips show are read."""
        shard = plan.ds.shards[k]
        keys = {f"{shard.episodes[e]:08d}": e for e in wanted}

        def need(sample: dict, meta: dict) -> set[str]:
            if "__specs__" not in meta:
                return set(members_of(sample))
            steps = wanted[keys[sample["__key__"]]]
            entries = [t // meta["frame_every"] for t in steps]  # a camera's entry i is step i * frame_every
            return {"action.npy"} | {block_member(plan.camera, t0) for t0 in blocks_for(entries, meta["block_steps"])}

        out: dict[int, dict | DataError] = {}
        try:
            for s in read_samples(shard, set(keys), self.cfg.allow_pipe, need):
                where = f"{shard.url}: {s['__key__']}"
                e = keys.get(s["__key__"])
                if e is None:
                    continue
                try:
                    meta = sample_meta(s, where)
                    plan.ds.check_frames(meta, where)  # before a frame is decoded: a step inflates to its declared size
                    if int(meta["length"]) != shard.lengths[e]:
                        raise DataError(f"{where}: meta.json: length {meta['length']}, the manifest says {shard.lengths[e]}")
                    if meta["frame_every"] != plan.frame_every:  # the clips were planned with the card's
                        raise DataError(f"{where}: meta.json: frame_every {meta['frame_every']}, the dataset's card says "
                                        f"{plan.frame_every}")
                    check_complete(s, meta, where)
                    s["actions"] = sample_actions(s, plan.ds.card, where)
                    s["meta"] = meta
                    out[e] = s
                except DataError as err:
                    self._broken(err, shard.url, "samples")
                    out[e] = err
        except DataError as err:
            self._broken(err, shard.url, "shards")
        for e, key in ((e, k_) for k_, e in keys.items()):
            if e not in out:
                err = DataError(f"{shard.url}: {key}: sample is missing from the shard")
                self._broken(err, shard.url, "samples")
                out[e] = err
        return out

    def _make_clip(self, plan: DatasetPlan, k: int, samples: dict, e: int, start: int) -> dict | None:
        s = samples[e]
        if isinstance(s, DataError):
            self.state.skipped["clips"] += 1
            return None
        cfg, stride, L = self.cfg, plan.stride, plan.tok.spec.chunk_length
        steps = start + np.arange(cfg.frames) * stride
        where = f"{plan.ds.shards[k].url}: {s['__key__']}"
        try:
            frames = resize_frames(sample_frames(s, plan.camera, steps, where), cfg.image_size, cfg.aspect)
        except DataError as err:  # an undecodable frame costs only the clips that show it
            self._broken(err, plan.ds.shards[k].url, "samples")
            self.state.skipped["clips"] += 1
            return None
        return {
            "frames": frames,
            "windows": np.stack([s["actions"][t:t + L] for t in steps]),  # [F, L, native_dim]: tokenized per batch
            "embodiment": plan.tok.spec.embodiment_token, "dataset": plan.index,
            "control_hz": np.float32(plan.ds.card.header.control_frequency_hz), "frame_stride": np.int64(stride),
            "instruction": s["meta"].get("instruction", ""),
            "key": f"{plan.ds.name}/{plan.ds.shards[k].episodes[e]}@{int(start)}",
        }


def _as_is(item):
    return item


def collate(clips: list[dict]) -> dict:
    out = {}
    for k in clips[0]:
        vals = [c[k] for c in clips]
        out[k] = vals if isinstance(vals[0], str) else np.stack([np.asarray(v) for v in vals])
    return out


# ----------------------------------------------------------------------------------------- the loader
def _dist_rank_world() -> tuple[int, int]:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    except ImportError:
        pass
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class ClipLoader:
    """Iterate batches of one epoch per `iter()`; `state_dict()` / `load_state_dict()` resume mid-epoch exactly.

    With `num_workers > 0` the batches come from torch DataLoader workers, one stream each, taken in turn."""

    def __init__(self, cfg: LoaderConfig, rank: int | None = None, world_size: int | None = None, num_workers: int = 0):
        if rank is None or world_size is None:
            rank, world_size = _dist_rank_world()
        self.cfg, self.rank, self.world, self.num_workers = cfg, rank, world_size, num_workers
        self.local_streams = max(1, num_workers)
        n_streams = world_size * self.local_streams
        registry = Registry(cfg.registry)
        if not cfg.datasets:
            raise DataError("loader: datasets: expected at least one dataset")
        check_aspect(cfg.aspect, "loader: aspect")
        self.plans = [DatasetPlan(i, e, cfg, registry, n_streams) for i, e in enumerate(cfg.datasets)]
        self.max_tokens = cfg.max_action_tokens or max(p.tok.spec.max_tokens for p in self.plans)
        self.epoch_len = cfg.epoch_clips or sum(p.per_stream for p in self.plans)
        self.batches_per_epoch = -(-self.epoch_len // cfg.batch_size) * self.local_streams
        self.epoch = 0
        self.consumed = 0  # batches consumed in this epoch
        self.states = {s: StreamState() for s in range(self.local_streams)}
        self._source: DataLoader | None = None  # persistent workers, while they are in step with `states`
        self._source_rot, self._workers_in_step = 0, False

    def __len__(self) -> int:
        return self.batches_per_epoch

    @property
    def skipped(self) -> dict:
        out = {"clips": 0, "samples": 0, "shards": 0}
        for st in self.states.values():
            for k, v in st.skipped.items():
                out[k] += v
        return out

    def _stream(self, local: int) -> Stream:
        return Stream(self.plans, self.cfg, self.rank * self.local_streams + local, copy.deepcopy(self.states[local]),
                      self.epoch_len, self.max_tokens)

    def __iter__(self):
        if self.consumed >= self.batches_per_epoch:
            self._next_epoch()
        rot = self.consumed % self.local_streams  # the stream due next comes from worker 0
        if self._source is None or not self._workers_in_step:
            self._close_workers()
            # DataLoader takes workers' batches in turn; with no workers it runs the one stream in this process.
            # Its own generator: a DataLoader iterator otherwise draws its base seed from torch's global RNG, which
            # would shift the trainer's noise between a straight run and a resumed one (the clips do not use it).
            # Persistent workers keep their streams (open plans, tokenizers, read shards) from one epoch to the next.
            # collate_fn=_as_is: a batch's small arrays cross from the workers as numpy, pickled through the pipe, and
            # only the frames as a tensor: every tensor is a shared-memory segment whose descriptor is handed over on
            # its own socket connection, which cost ~0.5 ms of CPU per clip at 2 workers (benchmarks/README.md)
            source = DataLoader(_WorkerStreams(self, rot), batch_size=None, num_workers=self.num_workers, collate_fn=_as_is,
                                persistent_workers=self.num_workers > 0, generator=torch.Generator().manual_seed(self.cfg.seed))
            if self.num_workers > 0:
                self._source, self._source_rot = source, rot
        else:
            source = self._source
        self._workers_in_step = False  # until this epoch has been consumed to its end
        for local, batch, state in source:
            if isinstance(batch, UnifiedActionError):  # a worker's DataError: its one line, not torch's wrapped traceback
                self._close_workers()
                raise batch
            local = int(local)
            self.states[local] = StreamState.from_json(state)
            self.consumed += 1
            yield {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}
        if self.consumed >= self.batches_per_epoch:
            self._next_epoch()
            # each worker's stream is exactly where ours is: reuse them, if their rotation is the new epoch's (0)
            self._workers_in_step = self._source is not None and self._source_rot == 0

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_source": None, "_workers_in_step": False}  # workers never carry the parent's workers

    def close(self) -> None:
        """Stop the persistent workers now (they also stop when the loader is garbage-collected)."""
        self._close_workers()

    def _close_workers(self) -> None:
        """Stop persistent workers that are ahead of what was consumed (an epoch left early, a state loaded)."""
        source, self._source, self._workers_in_step = self._source, None, False
        it = getattr(source, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()

    def _next_epoch(self) -> None:
        self.epoch += 1
        self.consumed = 0
        for st in self.states.values():
            st.epoch_clips = 0

    # -- resume
    def _fingerprint(self) -> dict:
        return {"datasets": [[str(Path(p.entry.path)), p.entry.weight, p.camera, p.stride, p.total,
                              list(p.entry.episodes or ()), *([p.entry.tokenizer] if p.entry.tokenizer else [])]
                             for p in self.plans],
                "frames": self.cfg.frames, "clip_stride": self.cfg.clip_stride, "batch_size": self.cfg.batch_size,
                "seed": self.cfg.seed, "epoch_len": self.epoch_len}

    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "rank": self.rank, "world_size": self.world, "streams": self.local_streams,
                "epoch": self.epoch, "consumed": self.consumed, "config": self._fingerprint(),
                "states": {str(k): v.to_json() for k, v in self.states.items()}}

    def load_state_dict(self, sd: dict) -> None:
        want = {"version": STATE_VERSION, "rank": self.rank, "world_size": self.world, "streams": self.local_streams,
                "config": self._fingerprint()}
        for k, v in want.items():
            if sd.get(k) != v:
                raise DataError(f"loader state: {k}: saved {str(sd.get(k))[:200]}, this loader has {str(v)[:200]}; "
                                f"resume with the same datasets, batch size, seed, ranks and workers")
        self._close_workers()
        self.epoch, self.consumed = int(sd["epoch"]), int(sd["consumed"])
        self.states = {int(k): StreamState.from_json(v) for k, v in sd["states"].items()}


class _WorkerStreams(IterableDataset):
    """Run by each DataLoader worker: worker w serves local stream (w + rot) % W. A persistent worker keeps its
    stream from one epoch to the next and goes on from where it stopped, which is where the loader's state is."""

    def __init__(self, loader: ClipLoader, rot: int):
        self.loader, self.rot = loader, rot
        self._stream: Stream | None = None  # set in the worker process

    def __iter__(self):
        info = get_worker_info()
        local = ((info.id if info is not None else 0) + self.rot) % self.loader.local_streams
        if self._stream is None or info is None:
            self._stream = self.loader._stream(local)
        else:
            self._stream.state.epoch_clips = 0  # the next epoch, as ClipLoader._next_epoch counts it
        try:
            for batch, state in self._stream.batches():
                if info is not None:  # the frames, most of a batch's bytes, cross in one shared-memory segment
                    batch["frames"] = torch.from_numpy(batch["frames"])
                yield local, batch, state
        except UnifiedActionError as e:
            if info is None:
                raise
            # handed to the parent as an item: raised in a worker, torch would re-raise it as "Caught DataError in
            # DataLoader worker process 0" followed by the worker's whole traceback
            yield local, e, None
