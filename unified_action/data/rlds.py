"""Episodes from and to RLDS builds (tensorflow-datasets), the format of Open X-Embodiment.

An RLDS build is a TFDS builder directory (`<name>/<version>/` holding `dataset_info.json`,
`features.json` and the record files). Each record is one episode: a dict whose `steps` entry is a
sequence of step dicts, next to episode-level entries such as `episode_metadata`. Every field the card
names is a '/'-separated path into the step dict (or, for an 'episode' instruction, the episode dict):

- cameras: `card.cameras[i].key`, e.g. `observation/image` (RT-1) or `observation/image_0` (Bridge);
- actions: each `card.action[i].path`, one array (`action`, Bridge) or one entry of a dict
  (`action/world_vector`, RT-1); integer fields such as RT-1's one-hot `terminate_episode` keep their dtype;
- proprio: each `card.proprio[i].path`, e.g. `observation/state`;
- instruction: in the step (`language_instruction`), in the observation
  (`observation/natural_language_instruction`), in the episode (`episode_metadata/...`), or the card's constant.

Simulator cards name keys of a gymnasium observation instead ('observation' is the observation itself,
'render' is env.render()); `step_path_of_camera` and `step_path_of_proprio` place those inside the step, and
reader and writer both use them, so a build written with a card reads back with the same card.

Both record formats are read: TFRecord builds through `as_dataset` (needs TensorFlow) and ArrayRecord
builds through `as_data_source` (random access, no TensorFlow). Episodes are streamed one at a time, in the
order of the split's shards; `Episode.index` is the position in the split. TensorFlow and
tensorflow-datasets are imported only when a function here runs.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from unified_action.cards import DataCard
from unified_action.cards.schema import Camera, ObservationField, RLDSSource
from unified_action.data.episode import Episode
from unified_action.data.frames import encode_image
from unified_action.errors import DataError

_STEP_CHUNK = 1024  # steps batched per read of a TFRecord episode (batching all at once preallocates huge buffers)


def _tfds():
    """tensorflow_datasets, imported on first use with TensorFlow's C++ log spam turned down."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ImportError("RLDS needs tensorflow-datasets: pip install 'unified-action[rlds]'") from None
    return tfds


# ------------------------------------------------------------------------------------------------
# Paths
# ------------------------------------------------------------------------------------------------


def step_path_of_camera(cam: Camera) -> str:
    """Path of a camera's image inside an RLDS step: the key itself under 'observation/', else observation/<name>."""
    return cam.key if cam.key.startswith("observation/") else f"observation/{cam.name}"


def step_path_of_proprio(field: ObservationField) -> str:
    """Path of a proprio field inside an RLDS step: the path itself under 'observation/', else a flat name there."""
    if field.path.startswith("observation/"):
        return field.path
    return "observation/state" if field.path == "observation" else "observation/" + field.path.replace("/", "_")


def builder_dir(card: DataCard, root: str | Path) -> Path:
    """The TFDS builder directory: `root` if it holds dataset_info.json, else the card's builder_dir under it.

    For a card that is not an RLDS source (a simulator card written with `write_rlds`), the fallback is
    `root/<card name>/<version>`, the newest version there.
    """
    root = Path(root)
    if (root / "dataset_info.json").is_file():
        return root
    src = card.header.source
    if isinstance(src, RLDSSource):
        cand = root / src.builder_dir
        if (cand / "dataset_info.json").is_file():
            return cand
        raise DataError(f"{cand}: no TFDS build (expected dataset_info.json there, or in {root} itself)")
    versions = [p.parent for p in (root / card.name).glob("*/dataset_info.json")]
    if versions:  # the newest, comparing versions as numbers (1.10.0 after 1.9.0)
        return max(versions, key=lambda p: tuple(int(x) if x.isdigit() else -1 for x in p.name.split(".")))
    raise DataError(f"{root}: no TFDS build (expected dataset_info.json there, or in {root / card.name}/<version>)")


def _split_of(card: DataCard) -> str:
    src = card.header.source
    return src.split if isinstance(src, RLDSSource) else "train"


def _open(card: DataCard, root: str | Path):
    """(builder dir, read-only builder, split name), checking that the split exists."""
    bdir = builder_dir(card, root)
    tfds = _tfds()
    try:
        builder = tfds.builder_from_directory(str(bdir))
    except Exception as e:  # a corrupt or foreign directory: tfds raises many types here
        raise DataError(f"{bdir}: not a readable TFDS build ({e.__class__.__name__}: {str(e).splitlines()[0][:200]})") from None
    split = _split_of(card)
    if split not in builder.info.splits:
        raise DataError(f"{bdir}: no split '{split}' (have {sorted(builder.info.splits)})")
    return bdir, builder, split


def count_episodes(card: DataCard, root: str | Path) -> int:
    """Number of episodes in the card's split, from the build's split info (no record is read)."""
    _, builder, split = _open(card, root)
    return int(builder.info.splits[split].num_examples)


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------


def read_episodes(card: DataCard, root: str | Path, start: int = 0, stop: int | None = None) -> Iterator[Episode]:
    """Stream episodes [start, stop) of the card's split, one at a time, in constant memory.

    Opens the build right away (a missing directory or split raises here, not at the first `next`).
    A field the card names but the data lacks raises DataError naming the episode and the keys there.
    """
    if start < 0 or (stop is not None and stop < 0):
        raise ValueError(f"start and stop must be >= 0, got {start}, {stop}")
    bdir, builder, split = _open(card, root)
    n = int(builder.info.splits[split].num_examples)
    stop = n if stop is None else min(stop, n)
    if builder.info.file_format.value == "array_record":
        raw = _array_record_episodes(builder, split, start, stop)
    else:
        raw = _tfrecord_episodes(builder, split, start, stop)
    return (_to_episode(card, bdir, i, steps, rest) for i, (steps, rest) in zip(range(start, stop), raw))


def _tfrecord_episodes(builder, split: str, start: int, stop: int) -> Iterator[tuple[dict, dict]]:
    """(steps as arrays stacked over time, the rest of the episode) for each TFRecord episode in [start, stop)."""
    if start >= stop:
        return
    tfds = _tfds()
    # One shard at a time (interleave 1), so records come in file order: the same order as_data_source indexes.
    config = tfds.ReadConfig(interleave_cycle_length=1)
    ds = builder.as_dataset(split=f"{split}[{start}:{stop}]", shuffle_files=False, read_config=config)
    for ep in ds:
        chunks = list(tfds.as_numpy(ep["steps"].batch(_STEP_CHUNK)))
        steps = _concat(chunks) if chunks else {}
        yield steps, _to_numpy({k: v for k, v in ep.items() if k != "steps"})


def _array_record_episodes(builder, split: str, start: int, stop: int) -> Iterator[tuple[dict, dict]]:
    """The same for an ArrayRecord build: random access to each episode, then to each of its steps."""
    source = builder.as_data_source(split=split)
    for i in range(start, stop):
        ep = source[i]
        steps = ep["steps"]
        stacked = _stack([steps[j] for j in range(len(steps))]) if len(steps) else {}
        yield stacked, {k: v for k, v in ep.items() if k != "steps"}


def _concat(chunks: list) -> Any:
    if isinstance(chunks[0], dict):
        return {k: _concat([c[k] for c in chunks]) for k in chunks[0]}
    return np.concatenate(chunks)


def _stack(items: list) -> Any:
    if isinstance(items[0], dict):
        return {k: _stack([x[k] for x in items]) for k in items[0]}
    return np.stack([np.asarray(x) for x in items])


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    return tree.numpy() if hasattr(tree, "numpy") else tree


def _get(tree: dict, path: str, where: str, level: str) -> Any:
    """The value at a '/' path, or a DataError naming the path and the keys where the walk stopped."""
    node: Any = tree
    for depth, part in enumerate(path.split("/")):
        at = f"'{'/'.join(path.split('/')[:depth])}'" if depth else "its top level"
        if not isinstance(node, dict):
            raise DataError(f"{where}: '{path}' is missing from the {level} ({at} is an array, not a dict)")
        if part not in node:
            raise DataError(f"{where}: '{path}' is missing from the {level} (keys at {at}: {sorted(node)})")
        node = node[part]
    if isinstance(node, dict):
        raise DataError(f"{where}: '{path}' is a dict of {sorted(node)} in the {level}, expected an array")
    return node


def _text(v: Any) -> str:
    v = v.item() if isinstance(v, np.ndarray) else v
    return v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v)


def _to_episode(card: DataCard, bdir: Path, index: int, steps: dict, rest: dict) -> Episode:
    where = f"{bdir}: episode {index}"
    if not steps:
        raise DataError(f"{where}: episode has no steps")

    def step(path: str) -> np.ndarray:
        return np.asarray(_get(steps, path, where, "step"))

    is_first = step("is_first").astype(bool)
    T = len(is_first)
    actions = {}
    for f in card.header.action:
        a = step(f.path)
        if a.size != T * int(np.prod(f.shape, dtype=np.int64)):
            raise DataError(f"{where}: '{f.path}': shape {list(a.shape)}, expected [{T}, {', '.join(map(str, f.shape))}] (card)")
        actions[f.path] = a.reshape((T, *f.shape))  # native dtype kept (RT-1's one-hot stays int32)
    inst = card.header.instruction
    if inst is None:
        text = ""
    elif inst.location == "constant":
        text = inst.text or ""
    elif inst.location == "episode":
        text = _text(_get(rest, inst.path or "", where, "episode"))
    else:  # 'step' or 'observation': both are paths inside the step; the first step's is the episode's
        text = _text(step(inst.path or "")[0])
    meta = rest.get("episode_metadata")
    file_path = _text(meta["file_path"]) if isinstance(meta, dict) and "file_path" in meta else ""
    has_discount = "discount" in steps
    return Episode(
        card=card.name,
        index=index,
        frames={c.name: step(step_path_of_camera(c)).astype(np.uint8, copy=False) for c in card.header.cameras},
        actions=actions,
        reward=step("reward").astype(np.float32, copy=False).reshape(T),
        is_first=is_first,
        is_last=step("is_last").astype(bool),
        is_terminal=step("is_terminal").astype(bool),
        instruction=text,
        proprio={p.path: step(step_path_of_proprio(p)) for p in card.header.proprio},
        discount=step("discount").astype(np.float32, copy=False).reshape(T) if has_discount else None,
        source=file_path or f"{bdir}[{index}]",
    )


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------


def _put(tree: dict, path: str, value: Any, what: str) -> None:
    """Set tree[a][b]... = value for path 'a/b/...', refusing to overwrite (two card fields on one path)."""
    *parents, leaf = path.split("/")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise DataError(f"{what}: '{path}' collides with another field at '{part}'")
    if leaf in node:
        raise DataError(f"{what}: '{path}' is used by two fields of the card")
    node[leaf] = value


def _png(frame: np.ndarray) -> bytes:
    # Encoded here (lossless) so tfds stores the bytes as given: no TensorFlow encode, frames round-trip exactly.
    return encode_image(frame, "png")


def _instruction_paths(card: DataCard) -> tuple[list[str], str | None]:
    """Step paths and episode path where the instruction is written, so the card's reader finds it."""
    inst, step_paths = card.header.instruction, ["language_instruction"]
    if inst is not None and inst.location in ("step", "observation") and inst.path and inst.path not in step_paths:
        step_paths.append(inst.path)
    episode_path = inst.path if inst is not None and inst.location == "episode" else None
    return step_paths, episode_path


def _features(card: DataCard, first: Episode, tfds) -> Any:
    """The RLDS feature tree for the card; image and proprio shapes from the first episode."""
    steps: dict = {}
    what = f"write_rlds {card.name}"
    for cam in card.header.cameras:
        shape = tuple(first.frames[cam.name].shape[1:])
        _put(steps, step_path_of_camera(cam), tfds.features.Image(shape=shape, encoding_format="png"), what)
    for p in card.header.proprio:
        if p.path not in first.proprio:
            raise DataError(f"{what}: episode {first.index}: proprio '{p.path}' is missing (have {sorted(first.proprio)})")
        shape = tuple(np.shape(first.proprio[p.path])[1:])
        _put(steps, step_path_of_proprio(p), tfds.features.Tensor(shape=shape, dtype=np.float32), what)
    for f in card.header.action:
        _put(steps, f.path, tfds.features.Tensor(shape=tuple(f.shape), dtype=np.dtype(f.dtype)), what)
    for name, dtype in (("reward", np.float32), ("discount", np.float32), ("is_first", np.bool_),
                        ("is_last", np.bool_), ("is_terminal", np.bool_)):
        _put(steps, name, tfds.features.Scalar(dtype=dtype), what)
    step_paths, episode_path = _instruction_paths(card)
    for path in step_paths:
        _put(steps, path, tfds.features.Text(), what)
    top: dict = {"steps": tfds.features.Dataset(steps), "episode_metadata": {"file_path": tfds.features.Text()}}
    if episode_path:
        _put(top, episode_path, tfds.features.Text(), what)
    return tfds.features.FeaturesDict(top)


def _example(card: DataCard, ep: Episode, shapes: dict[str, tuple]) -> dict:
    """One episode as the nested dict the features above encode."""
    where = f"write_rlds {card.name}: episode {ep.index}"
    ep.check(card, where)
    if ep.frame_every != 1:  # as write_rlds refuses such a card: a step needs its own frame
        raise DataError(f"{where}: frame_every {ep.frame_every}: an RLDS step needs its own frame")
    T = len(ep)
    steps: dict = {}
    for cam in card.header.cameras:
        fr = ep.frames[cam.name]
        if fr.shape[1:] != shapes[cam.name]:
            raise DataError(f"{where}: frames.{cam.name}: {list(fr.shape[1:])}, expected {list(shapes[cam.name])} like the first episode")
        _put(steps, step_path_of_camera(cam), [_png(x) for x in fr], where)
    for p in card.header.proprio:
        if p.path not in ep.proprio:
            raise DataError(f"{where}: proprio '{p.path}' is missing (have {sorted(ep.proprio)})")
        _put(steps, step_path_of_proprio(p), np.asarray(ep.proprio[p.path], dtype=np.float32), where)
    for f in card.header.action:
        _put(steps, f.path, np.asarray(ep.actions[f.path]).astype(f.dtype).reshape((T, *f.shape)), where)
    discount = np.ones(T, np.float32) if ep.discount is None else ep.discount
    for name, arr, dtype in (("reward", ep.reward, np.float32), ("discount", discount, np.float32),
                             ("is_first", ep.is_first, np.bool_), ("is_last", ep.is_last, np.bool_),
                             ("is_terminal", ep.is_terminal, np.bool_)):
        _put(steps, name, np.asarray(arr, dtype=dtype), where)
    inst = card.header.instruction
    text = ep.instruction or (inst.text if inst is not None and inst.text else "")
    step_paths, episode_path = _instruction_paths(card)
    for path in step_paths:
        _put(steps, path, [text] * T, where)
    out: dict = {"steps": steps, "episode_metadata": {"file_path": ep.source}}
    if episode_path:
        _put(out, episode_path, text, where)
    return out


def write_rlds(card: DataCard, episodes: Iterable[Episode], out_dir: str | Path, *, file_format: str = "tfrecord",
               version: str = "1.0.0", overwrite: bool = False) -> Path:
    """Write episodes as a TFDS dataset named after the card, in the Open X-Embodiment step schema.

    Layout: `out_dir/<card name>/<version>/`, split 'train', episodes in the order given. Steps hold
    observation{<camera>: PNG image, <proprio>: float32}, the card's action fields at their paths with
    the card's dtype and shape, reward, discount, is_first, is_last, is_terminal and language_instruction;
    episode_metadata holds file_path (Episode.source). Episodes are streamed (tfds buffers the encoded
    records, spilling to disk). The build happens in a temporary directory inside `out_dir` and is renamed
    into place at the end, so an interrupted build never looks finished. Returns the builder directory.
    """
    if file_format not in ("tfrecord", "array_record"):
        raise ValueError(f"file_format must be 'tfrecord' or 'array_record', got {file_format!r}")
    if not re.fullmatch(r"[a-zA-Z]\w*", card.name):
        raise DataError(f"write_rlds: card name '{card.name}' is not a TFDS dataset name (a letter, then letters, digits, _)")
    if card.header.frame_every != 1:
        # an RLDS step holds its own observation: repeating a frame would show a step what it did not see
        raise DataError(f"write_rlds {card.name}: source.frame_every {card.header.frame_every}: the episodes have a frame "
                        f"only every {card.header.frame_every} steps, and an RLDS step needs its own; record with "
                        f"frame_every 1 to export to RLDS")
    out_dir = Path(out_dir)
    dest = out_dir / card.name / version
    if dest.exists() and not overwrite:
        raise DataError(f"{dest}: already exists (remove it, or pass overwrite=True)")
    it = iter(episodes)
    first = next(it, None)
    if first is None:
        raise DataError(f"write_rlds {card.name}: no episodes to write")
    first.check(card, f"write_rlds {card.name}: episode {first.index}")
    tfds = _tfds()
    features = _features(card, first, tfds)
    shapes = {c.name: tuple(first.frames[c.name].shape[1:]) for c in card.header.cameras}
    stream = itertools.chain([first], it)
    del first  # the stream alone holds it, and lets go once it is written: one episode in memory at a time

    class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):  # one class per call: no global registry
        VERSION = tfds.core.Version(version)
        # No source file to find checksums beside: tfds 4.9's lookup for a class inside a package needs the
        # importlib_resources backport, which it does not install on Python >= 3.9.
        code_path = None

        def _info(self):
            # Built directly: dataset_info_from_configs needs the builder to live in a package.
            # disable_shuffling keeps the given order, so Episode.index on reading is the position written.
            return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True,
                                         description=f"Episodes of data card '{card.name}' (unified_action.data.rlds).")

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, ep in enumerate(stream):
                yield i, _example(card, ep, shapes)  # integer keys: with shuffling off, records sort by key

    _Builder.name = card.name
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{card.name}-{version}-", dir=out_dir))
    try:
        _Builder(data_dir=str(tmp), file_format=file_format).download_and_prepare()
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.exists():  # overwrite: move the old build aside first (a directory cannot be replaced by rename)
            os.replace(dest, tmp / "replaced")
        os.replace(tmp / card.name / version, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
