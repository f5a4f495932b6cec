"""Episodes from a local LeRobot dataset in format v3.x, read without the `lerobot` package.

What is read (LeRobot `codebase_version` 'v3.0', as written by lerobot's `LeRobotDataset`):

    meta/info.json                      codebase_version, fps, features {name: {dtype, shape, names}},
                                        data_path / video_path templates ('chunk-{chunk_index:03d}/...')
    meta/episodes/chunk-*/file-*.parquet one row per episode: episode_index, tasks, length,
                                        data/chunk_index, data/file_index, dataset_from_index, dataset_to_index,
                                        videos/<key>/{chunk_index, file_index, from_timestamp, to_timestamp}
    meta/tasks.parquet                  task strings (a pandas index, or a 'task' column) and task_index
    data/chunk-*/file-*.parquet         one row per frame, many episodes per file: a column per feature,
                                        timestamp, frame_index, episode_index, index, task_index
    videos/<key>/chunk-*/file-*.mp4     many episodes per file, one after the other in time

Card mapping: camera keys, action paths and proprio paths are LeRobot feature names ('observation.images.top',
'action', 'observation.state'). The instruction 'step'/'task' is the task string of the episode's first frame
(its task_index in meta/tasks.parquet); 'episode'/'tasks' the first of the episode's `tasks`; another 'step' or
'observation' path is a string column of the frame data; 'constant' is the card's text.

Rewards and flags: reward is `next.reward` when the dataset has it, else zeros. `is_terminal` is `next.done` when
the dataset has it, else all False: LeRobot has no general terminal flag, most datasets are demonstrations cut
at a time limit or by the operator, and calling their last step terminal would claim an environment end that
never happened (a truncated episode is the safe reading). `is_first`/`is_last` are the episode's bounds.

Video is lossy. Frames from a 'video' feature are the decoded frames of the encoded mp4 (AV1, H.264...,
usually 4:2:0 chroma), not the pixels the robot's camera produced; nothing can recover those. Frames from an
'image' feature (PNG bytes in the parquet) are exact. Each frame is taken by presentation timestamp:
`from_timestamp + timestamp` of the frame, matched within a quarter of a frame period (LeRobot itself
asserts 1e-4 s, so every dataset LeRobot loads passes here).

Memory: the episode table holds a few scalars per episode; frame data is read one episode at a time (parquet
row groups pruned by `episode_index` statistics), and a video is decoded from the keyframe before the episode's
start until its last frame, keeping only that episode's frames. lerobot's writer puts each episode in its own
row groups; a data file written as one row group (a pandas rewrite) is decoded whole for each of its episodes:
bounded memory (data_files_size_in_mb), but repeated work.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unified_action.cards import DataCard
from unified_action.data.episode import Episode
from unified_action.errors import DataError, did_you_mean

INFO_PATH = "meta/info.json"
EPISODES_DIR = "meta/episodes"
TASKS_PATH = "meta/tasks.parquet"
CONVERT_V21 = "python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id=<repo_id>"
_MATCH_FRAMES = 0.25  # a decoded frame matches a wanted timestamp within this fraction of a frame period


def dataset_dir(card: DataCard, root: str | Path) -> Path:
    """`root` itself when it holds meta/info.json, else `root / card.header.source.dataset_dir`."""
    root = Path(root)
    if (root / INFO_PATH).is_file():
        return root
    src = card.header.source
    if src.type != "lerobot":
        raise DataError(f"{card.name}: source.type: '{src.type}', expected 'lerobot' to read a LeRobot dataset")
    return root / src.dataset_dir


def count_episodes(card: DataCard, root: str | Path) -> int:
    """Number of episodes (rows of meta/episodes/*/*.parquet), after checking the format version."""
    import pyarrow.parquet as pq

    d = dataset_dir(card, root)
    _load_info(d)
    return sum(pq.read_metadata(p).num_rows for p in _episode_files(d))


def read_episodes(card: DataCard, root: str | Path, start: int = 0, stop: int | None = None) -> Iterator[Episode]:
    """Episodes [start, stop) in episode_index order, one at a time; each is checked against the card."""
    ds = _Dataset(card, dataset_dir(card, root))
    for row in ds.episodes[start:stop]:
        ep = ds.read(row)
        ep.check(card, ep.source)
        yield ep


# ------------------------------------------------------------------------------------------------
# Metadata
# ------------------------------------------------------------------------------------------------


def _load_info(d: Path) -> dict:
    path = d / INFO_PATH
    if not path.is_file():
        raise DataError(f"{path}: file not found (a LeRobot v3 dataset directory holds meta/info.json, meta/episodes/, data/)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot be read as JSON ({e.__class__.__name__}: {e})") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(info).__name__}")
    version = str(info.get("codebase_version", ""))
    m = re.match(r"^v?(\d+)\.(\d+)", version)
    if m is None:
        raise DataError(f"{path}: codebase_version: '{version}', expected a LeRobot format version like 'v3.0'")
    major = int(m.group(1))
    if major == 2:
        first = " after its v2.0 -> v2.1 converter" if int(m.group(2)) == 0 else ""
        raise DataError(f"{path}: codebase_version: '{version}' is LeRobot format v2, this reader supports v3.x; "
                        f"convert it with lerobot's `{CONVERT_V21}`{first}")
    if major != 3:
        raise DataError(f"{path}: codebase_version: '{version}' is not supported, this reader supports LeRobot format v3.x")
    for key, kind in (("fps", (int, float)), ("features", dict), ("data_path", str)):
        if not isinstance(info.get(key), kind):
            raise DataError(f"{path}: {key}: missing or of the wrong type (got {info.get(key)!r})")
    return info


def _episode_files(d: Path) -> list[Path]:
    files = sorted((d / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
    if not files:
        raise DataError(f"{d / EPISODES_DIR}: no chunk-*/file-*.parquet files (the per-episode metadata of LeRobot v3)")
    return files


@dataclass(frozen=True)
class _Camera:
    name: str  # the card's camera name: the key of Episode.frames
    key: str  # the LeRobot feature
    video: bool
    height: int
    width: int


def _hw(shape: list, names) -> tuple[int, int]:
    """(height, width) of an image feature: shape is [H, W, C] in v3 ('height', 'width', 'channels' names),
    [C, H, W] in some ported datasets; the names say which."""
    if isinstance(names, list) and "height" in names and "width" in names and len(names) == len(shape):
        return int(shape[names.index("height")]), int(shape[names.index("width")])
    return (int(shape[0]), int(shape[1])) if shape[-1] in (1, 3, 4) else (int(shape[1]), int(shape[2]))


class _Dataset:
    def __init__(self, card: DataCard, d: Path):
        import pyarrow.parquet as pq

        self.card, self.dir = card, d
        self.info = info = _load_info(d)
        self.info_path = d / INFO_PATH
        self.fps = float(info["fps"])
        feats: dict = info["features"]

        def feature(path: str, what: str) -> dict:
            if path not in feats:
                raise DataError(f"{self.info_path}: features: {what} '{path}' is missing{did_you_mean(path, feats)} "
                                f"(have {sorted(feats)})")
            return feats[path]

        self.cameras: list[_Camera] = []
        for cam in card.header.cameras:
            ft = feature(cam.key, f"camera '{cam.name}' key")
            if ft.get("dtype") not in ("video", "image"):
                raise DataError(f"{self.info_path}: features.{cam.key}.dtype: '{ft.get('dtype')}', expected 'video' or 'image'")
            shape = ft.get("shape") or []
            if len(shape) != 3:
                raise DataError(f"{self.info_path}: features.{cam.key}.shape: {shape}, expected [height, width, channels]")
            h, w = _hw(shape, ft.get("names"))
            if (h, w) != (cam.height, cam.width):
                raise DataError(f"{self.info_path}: features.{cam.key}.shape: {shape} is {h}x{w}, but the card's camera "
                                f"'{cam.name}' says {cam.height}x{cam.width}")
            self.cameras.append(_Camera(cam.name, cam.key, ft["dtype"] == "video", h, w))
        if any(c.video for c in self.cameras) and not isinstance(info.get("video_path"), str):
            raise DataError(f"{self.info_path}: video_path: missing, but the card reads video features")

        # native arrays: path -> shape the card wants
        self.arrays: dict[str, tuple[int, ...]] = {}
        for f in card.header.action:
            self.arrays[f.path] = self._numeric(f.path, feature(f.path, "action"), tuple(f.shape) or (1,))
        for p in card.header.proprio:
            ft = feature(p.path, "proprio")
            self.arrays[p.path] = self._numeric(p.path, ft, tuple(p.shape) or tuple(ft.get("shape") or (1,)))

        inst = card.header.instruction
        self.instruction_column: str | None = None
        if inst is not None and inst.location in ("step", "observation") and inst.path != "task":
            if feature(inst.path, "instruction").get("dtype") != "string":
                raise DataError(f"{self.info_path}: features.{inst.path}.dtype: '{feats[inst.path].get('dtype')}', "
                                "expected 'string' for an instruction")
            self.instruction_column = inst.path
        reads_task = inst is not None and inst.location in ("step", "observation") and inst.path == "task"
        self.tasks = self._load_tasks() if reads_task else {}

        # the per-episode table: only the columns this reader needs (the stats/* columns are never read)
        need = ["episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index", "dataset_to_index"]
        need += [f"videos/{c.key}/{k}" for c in self.cameras if c.video
                 for k in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
        need += ["tasks"] if inst is not None and inst.location == "episode" else []
        rows: list[dict] = []
        for path in _episode_files(d):
            names = pq.read_schema(path).names
            for col in need:
                if col not in names:
                    raise DataError(f"{path}: column '{col}' is missing{did_you_mean(col, names)}")
            rows += pq.read_table(path, columns=need).to_pylist()
        rows.sort(key=lambda r: r["episode_index"])
        self.episodes = rows

    def _numeric(self, path: str, ft: dict, want: tuple[int, ...]) -> tuple[int, ...]:
        dtype, shape = ft.get("dtype"), list(ft.get("shape") or [])
        if dtype in ("video", "image", "string", None):
            raise DataError(f"{self.info_path}: features.{path}.dtype: '{dtype}', expected a numeric dtype")
        if math.prod(shape) != math.prod(want):
            raise DataError(f"{self.info_path}: features.{path}.shape: {shape}, expected {list(want)} (as the card says)")
        return want

    def _load_tasks(self) -> dict[int, str]:
        import pyarrow.parquet as pq

        path = self.dir / TASKS_PATH
        if not path.is_file():
            raise DataError(f"{path}: file not found (the task strings of the card's 'step'/'task' instruction)")
        table = pq.read_table(path)
        names = table.column_names
        col = "task" if "task" in names else None
        if col is None:  # lerobot writes a pandas frame indexed by the task string: the index is a column
            try:
                index_cols = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}")).get("index_columns", [])
            except (ValueError, AttributeError):
                index_cols = []
            col = next((c for c in index_cols if isinstance(c, str) and c in names), None)
        if col is None or "task_index" not in names:
            raise DataError(f"{path}: expected a 'task_index' column and the task strings (a 'task' column or the "
                            f"pandas index), got columns {names}")
        return dict(zip(table.column("task_index").to_pylist(), table.column(col).to_pylist(), strict=True))

    # --------------------------------------------------------------------------------------------
    # One episode
    # --------------------------------------------------------------------------------------------

    def read(self, row: dict) -> Episode:
        import pyarrow.parquet as pq

        i, T = int(row["episode_index"]), int(row["length"])
        source = f"{self.dir} episode {i}"
        path = self._file(self.info["data_path"], row["data/chunk_index"], row["data/file_index"], "data_path", i)
        names = pq.read_schema(path).names
        cols = [*self.arrays, *(c.key for c in self.cameras if not c.video), "episode_index", "frame_index"]
        cols += [self.instruction_column] if self.instruction_column and self.instruction_column not in cols else []
        cols += [c for c in ("timestamp", "task_index", "next.reward", "next.done") if c in names and c not in cols]
        for col in cols:
            if col not in names:
                raise DataError(f"{path}: column '{col}' is missing{did_you_mean(col, names)} (episode {i})")
        table = pq.read_table(path, columns=cols, filters=[("episode_index", "==", i)])
        table = table.sort_by("frame_index")
        if table.num_rows != T:
            raise DataError(f"{path}: episode {i} has {table.num_rows} rows, expected its length {T} from {EPISODES_DIR}")
        frame_index = table.column("frame_index").to_numpy()
        if not np.array_equal(frame_index, np.arange(T)):
            raise DataError(f"{path}: frame_index of episode {i}: expected 0..{T - 1} without gaps")
        timestamps = (table.column("timestamp").to_numpy().astype(np.float64) if "timestamp" in table.column_names
                      else np.arange(T) / self.fps)

        arrays = {p: _numeric_column(table, p, shape, path) for p, shape in self.arrays.items()}
        frames: dict[str, np.ndarray] = {}
        for cam in self.cameras:
            if cam.video:
                vpath = self._file(self.info["video_path"], row[f"videos/{cam.key}/chunk_index"],
                                   row[f"videos/{cam.key}/file_index"], "video_path", i, video_key=cam.key)
                span = (float(row[f"videos/{cam.key}/from_timestamp"]), float(row[f"videos/{cam.key}/to_timestamp"]))
                frames[cam.name] = _decode_video(vpath, span, timestamps, self.fps, cam, i)
            else:
                frames[cam.name] = _decode_images(table, cam, path, self.dir)

        has = table.column_names
        reward = (_numeric_column(table, "next.reward", (1,), path).reshape(T).astype(np.float32)
                  if "next.reward" in has else np.zeros(T, np.float32))
        terminal = (_numeric_column(table, "next.done", (1,), path).reshape(T).astype(bool)
                    if "next.done" in has else np.zeros(T, bool))
        is_first, is_last = np.zeros(T, bool), np.zeros(T, bool)
        is_first[0], is_last[-1] = True, True
        action_paths = {f.path for f in self.card.header.action}
        return Episode(
            card=self.card.name, index=i, source=source,
            frames=frames,
            actions={p: a for p, a in arrays.items() if p in action_paths},
            proprio={p.path: arrays[p.path] for p in self.card.header.proprio},
            reward=reward, is_first=is_first, is_last=is_last, is_terminal=terminal,
            instruction=self._instruction(table, row, path, i),
        )

    def _file(self, template: str, chunk, file, field: str, i: int, **kw) -> Path:
        try:
            rel = template.format(chunk_index=int(chunk), file_index=int(file), **kw)
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise DataError(f"{self.info_path}: {field}: template '{template}' cannot be filled ({e!r}); "
                            "expected the v3 form with {chunk_index} and {file_index}") from None
        path = self.dir / rel
        if not path.is_file():
            raise DataError(f"{path}: file not found (episode {i}: chunk_index {chunk}, file_index {file})")
        return path

    def _instruction(self, table, row: dict, path: Path, i: int) -> str:
        inst = self.card.header.instruction
        if inst is None:
            return ""
        if inst.location == "constant":
            return inst.text or ""
        if inst.location == "episode":
            tasks = row.get("tasks") or []
            return str(tasks[0]) if tasks else ""
        if self.instruction_column is not None:
            return str(table.column(self.instruction_column)[0].as_py() or "")
        if "task_index" not in table.column_names:
            raise DataError(f"{path}: column 'task_index' is missing (episode {i}; the card reads its task)")
        k = table.column("task_index")[0].as_py()
        if k not in self.tasks:
            raise DataError(f"{self.dir / TASKS_PATH}: task_index {k} (episode {i}) is not listed")
        return str(self.tasks[k])


# ------------------------------------------------------------------------------------------------
# Columns and frames
# ------------------------------------------------------------------------------------------------


def _numeric_column(table, name: str, shape: tuple[int, ...], path: Path) -> np.ndarray:
    """[T, *shape] from a scalar, list or fixed-size-list column (HF Sequence/Array2D are nested lists)."""
    import pyarrow as pa

    col = table.column(name).combine_chunks()
    n = len(col)
    while pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
        if col.null_count:
            break
        col = col.flatten()
    if col.null_count:
        raise DataError(f"{path}: column '{name}' has missing values (nulls), expected {list(shape)} numbers per frame")
    arr = col.to_numpy(zero_copy_only=False)
    if arr.dtype.kind not in "biuf" or arr.size != n * math.prod(shape):
        raise DataError(f"{path}: column '{name}': {arr.size // max(n, 1)} values of {arr.dtype} per frame, "
                        f"expected {math.prod(shape)} numbers (shape {list(shape)})")
    return arr.reshape(n, *shape)


def _decode_images(table, cam: _Camera, path: Path, root: Path) -> np.ndarray:
    """Hugging Face `Image` cells (struct {bytes, path}) to uint8 [T, H, W, 3]."""
    from PIL import Image

    cells = table.column(cam.key).to_pylist()
    out = np.empty((len(cells), cam.height, cam.width, 3), np.uint8)
    for t, cell in enumerate(cells):
        data, rel = (cell.get("bytes"), cell.get("path")) if isinstance(cell, dict) else (None, None)
        try:
            src = io.BytesIO(data) if data else (root / rel if rel else None)
            if src is None:
                raise ValueError("neither bytes nor path")
            if not data and not Path(src).resolve().is_relative_to(root.resolve()):
                raise ValueError(f"path '{rel}' points outside the dataset")  # a data file never reads elsewhere
            with Image.open(src) as im:
                img = np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: column '{cam.key}' row {t}: cannot decode the image ({e})") from None
        if img.shape != out.shape[1:]:
            raise DataError(f"{path}: column '{cam.key}' row {t}: image {list(img.shape)}, expected {list(out.shape[1:])}")
        out[t] = img
    return out


def _decode_video(path: Path, span: tuple[float, float], timestamps: np.ndarray, fps: float, cam: _Camera,
                  episode: int) -> np.ndarray:
    """The frames presented at `from_timestamp + timestamps` (seconds in the file), uint8 [T, H, W, 3] RGB.

    Seeks to the keyframe at or before the first wanted time (frames before it cannot be decoded alone), then
    decodes forward, keeping a frame when its time is within a quarter period of the next wanted time."""
    import av

    wanted = span[0] + timestamps
    T, tol = len(wanted), _MATCH_FRAMES / fps
    if wanted[-1] > span[1] + tol:  # past to_timestamp lie the next episode's frames
        raise DataError(f"{path}: episode {episode}: its last frame at {wanted[-1]:.4f} s is past its to_timestamp "
                        f"{span[1]:.4f} s (timestamps and {EPISODES_DIR} disagree)")
    out = np.empty((T, cam.height, cam.width, 3), np.uint8)
    k = 0
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            tb = stream.time_base
            container.seek(max(0, math.floor((wanted[0] - tol) / tb)), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * tb)
                if t < wanted[k] - tol:
                    continue  # before this episode (decoded from the preceding keyframe) or a frame we have
                if t > wanted[k] + tol:
                    raise DataError(f"{path}: episode {episode}: no frame at {wanted[k]:.4f} s (frame {k} of {T}); "
                                    f"the next frame is at {t:.4f} s (from_timestamp and fps {fps:g} disagree with the video)")
                img = frame.to_ndarray(format="rgb24")
                if img.shape != out.shape[1:]:
                    raise DataError(f"{path}: frame {list(img.shape)}, expected {list(out.shape[1:])} (features.{cam.key}.shape)")
                out[k] = img
                k += 1
                if k == T:
                    break
    except av.FFmpegError as e:
        raise DataError(f"{path}: cannot decode the video ({e.__class__.__name__}: {e})") from None
    if k < T:
        raise DataError(f"{path}: episode {episode}: the video ends after {k} of its {T} frames "
                        f"(wanted up to {wanted[-1]:.4f} s)")
    return out
