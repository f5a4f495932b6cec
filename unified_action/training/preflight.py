"""Check a whole training job before it deletes, registers or writes anything.

`check_job` runs at the start of a pretraining or fine-tuning job, after its config parsed and before
`--overwrite` empties the run directory or a new tokenizer is registered. It checks, in order: the model config
(built as `trainer.build_model` builds it, without building the model), the pretrained export the job starts
from (bounded sizes, the same model config but for what may grow), the data (every dataset opens, has its
tokenizer, and holds enough clips for every loader stream), the episodes a new embodiment's registered tokenizer
was fitted from (exactly the job's), optionally every shard's sha256 (`data.verify`), and the output location:
`--overwrite` deletes only a run directory of ours (nothing in it but what a run writes) that holds none of
the job's inputs. A refused job leaves every file as it was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from pathlib import Path

from unified_action.errors import ConfigError, DataError, TrainingError
from unified_action.training.config import TrainConfig

# What a run writes into its directory (trainer.py, checkpoint.py, export.py): --overwrite deletes nothing else.
RUN_ENTRIES = frozenset({"checkpoints", "metrics.jsonl", "tensorboard", "export", "export.tmp"})
GROWS = ("vocab_size", "max_action_tokens")  # what a job may enlarge over the export it starts from


def check_job(cfg: TrainConfig, where: str, *, overwrite: bool, init_from: str | None, world_size: int,
              pending: Collection[str] = ()) -> None:
    """Raise (one line) if any part of the job is wrong. `pending`: tokenizers the job will register itself
    (a fine-tuning job's new embodiments), checked from their cards."""
    from unified_action.tokenization import Registry

    registry = Registry(cfg.data.registry)
    vocab = registry.vocabulary()
    pre = check_model(cfg, init_from, vocab.size)
    check_data(cfg, registry, world_size, pending, pre if cfg.finetune is not None else None)
    if cfg.data.verify:
        check_shards(cfg)
    check_out(cfg, where, overwrite, init_from)


def job_model_config(cfg: TrainConfig, vocab_size: int, max_action_tokens: int):
    """The job's ModelConfig, the one `trainer.build_model` builds (ConfigError on a bad size or field)."""
    from unified_action.models import model_config

    return model_config(cfg.model.size, image_size=tuple(cfg.data.image_size), vocab_size=vocab_size,
                        max_action_tokens=max_action_tokens, max_frames=cfg.data.context_frames + cfg.data.future_frames,
                        context_frames=cfg.data.context_frames, **cfg.model.overrides)


def check_model(cfg: TrainConfig, init_from: str | None, vocab_size: int) -> dict | None:
    """-> the export's config (None without init_from). The export's model must be the job's but for GROWS."""
    new = job_model_config(cfg, max(1, vocab_size), 1).to_dict()
    if not init_from:
        return None
    from unified_action.training.export import read_export

    pre = read_export(init_from, weights=False)[0]
    old = pre["model"]
    diff = [k for k, v in new.items() if k not in GROWS and k != "size" and old.get(k) != v]
    if old.get("size") != new["size"]:
        diff.insert(0, "size")
    if diff:
        raise TrainingError(f"{init_from}: model config differs from this job's in {', '.join(diff)} "
                            f"(export: {', '.join(f'{k}={old.get(k)}' for k in diff[:3])}; job: "
                            f"{', '.join(f'{k}={new.get(k)}' for k in diff[:3])})")
    return pre


def _episodes(ds, entry) -> tuple[int, int]:
    lo, hi = entry.episodes or (0, ds.episodes)
    if not 0 <= lo < hi <= ds.episodes:
        raise DataError(f"{ds.root}: episodes: [{lo}, {hi}) is not a non-empty range within the dataset's "
                        f"{ds.episodes} episodes")
    return lo, hi


def manifest_sha256(ds) -> str:
    from unified_action.data.dataset import MANIFEST

    return hashlib.sha256((ds.root / MANIFEST).read_bytes()).hexdigest()


def fitted_from(ds, episodes: tuple[int, int]) -> dict:
    """What registration records about the episodes a tokenizer is fitted from (Registry.register)."""
    return {"dataset": str(ds.root), "manifest_sha256": manifest_sha256(ds), "episodes": list(episodes)}


def check_data(cfg: TrainConfig, registry, world_size: int, pending: Collection[str], pre: dict | None) -> None:
    """Every dataset opens, has (or will get) its tokenizer, and gives every loader stream at least one clip."""
    from unified_action.data.dataset import expand_urls, open_dataset
    from unified_action.data.loader import (
        DatasetPlan,
        LoaderConfig,
        MixtureEntry,
        aligned_clip_stride,
        check_frame_every,
        clip_span,
        frame_stride,
    )

    streams = world_size * max(1, cfg.data.num_workers)
    d = cfg.data
    loader_cfg = LoaderConfig(datasets=(), registry=d.registry, context_frames=d.context_frames,
                              future_frames=d.future_frames, image_size=tuple(d.image_size), clip_stride=d.clip_stride,
                              batch_size=cfg.train.micro_batch, seed=cfg.train.seed, strict=d.strict, allow_pipe=d.allow_pipe)
    names = set(registry.names())
    for i, e in enumerate(d.datasets):
        entry = MixtureEntry(**e.model_dump())
        ds = open_dataset(e.path, expand_urls(e.shards) if e.shards else None)
        lo, hi = _episodes(ds, e)
        name = ds.card.name
        if pre is not None and name not in pre["tokenizers"] and name in names:
            want, got = fitted_from(ds, (lo, hi)), registry.fitted_from(name)
            same = got is not None and all(got.get(k) == want[k] for k in ("manifest_sha256", "episodes"))
            if not same:
                was = (f"episodes [{got['episodes'][0]}, {got['episodes'][1]}) of {got.get('dataset')}" if got and
                       isinstance(got.get("episodes"), list) and len(got["episodes"]) == 2 else "episodes it did not record")
                raise ConfigError(f"{registry.root / name}: tokenizer '{name}' was fitted from {was}; this job trains on "
                                  f"episodes [{lo}, {hi}) of {ds.root}: a new embodiment's tokenizer must be fitted from "
                                  f"exactly those; use a registry without '{name}' (data.registry) or match finetune.episodes")
        if name in names:
            DatasetPlan(i, entry, loader_cfg, registry, streams)  # the loader's own checks: camera, clips, card
            continue
        if name not in pending:
            raise DataError(f"{ds.root}: tokenizer '{name}' is not registered in {registry.root}; "
                            f"run `uact tokenizer register {ds.root / (name + '.md')} --data {ds.root}`")
        cams = [c.name for c in ds.card.header.cameras]
        if (e.camera or (cams[0] if cams else None)) not in cams:
            raise DataError(f"{ds.root}: camera '{e.camera}' is not in the card (cameras: {cams})")
        L = ds.card.header.tokenizer.chunk_length
        check_frame_every(ds.root, frame_stride(ds.root, name, e.frame_stride, L), ds.frame_every)
        span = clip_span(loader_cfg.frames, L)
        stride = aligned_clip_stride(d.clip_stride or max(1, span // 2), ds.frame_every)  # as DatasetPlan plans them
        lengths = [T for s in ds.shards for T in s.lengths][lo:hi]
        clips = sum(len(range(0, T - span + 1, stride)) for T in lengths)
        if clips < streams:
            raise DataError(f"{ds.root}: {clips} clips of {span} steps in episodes [{lo}, {hi}), fewer than the {streams} "
                            f"streams (ranks x workers); record longer or more episodes, or lower the clip length")


def check_shards(cfg: TrainConfig) -> None:
    """data.verify: every local shard's size and sha256 against its manifest."""
    from unified_action.data.dataset import open_dataset, verify_dataset

    for e in cfg.data.datasets:
        ds = open_dataset(e.path)
        bad = verify_dataset(ds)
        if bad:
            raise DataError(f"data.verify: {len(bad)} of {len(ds.shards)} shards differ from their manifest: {bad[0]}")


def _inside(p: Path, root: Path) -> bool:
    return p == root or root in p.parents


def check_out(cfg: TrainConfig, where: str, overwrite: bool, init_from: str | None) -> None:
    """--overwrite deletes `out` only if it is a run directory of ours holding none of the job's inputs."""
    out = Path(cfg.out).resolve()
    if not overwrite or not out.exists():
        return
    inputs = [Path(e.path) for e in cfg.data.datasets] + [Path(cfg.data.registry), Path(cfg.train.deepspeed)]
    inputs += [Path(init_from)] if init_from else []
    inputs += [Path(where)] if where.endswith((".yaml", ".yml")) else []
    for p in inputs:
        if _inside(p.resolve(), out):
            raise ConfigError(f"{where}: out: {cfg.out} holds {p}, an input of this job; --overwrite would delete it: "
                              f"choose another out")
    if not out.is_dir():
        raise ConfigError(f"{where}: out: {cfg.out} is not a directory; --overwrite deletes only a run directory")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in RUN_ENTRIES)
    if foreign:
        raise ConfigError(f"{where}: out: {cfg.out} holds '{foreign[0]}', which no run writes; --overwrite deletes only "
                          f"a run directory ({', '.join(sorted(RUN_ENTRIES))}): choose another out")
