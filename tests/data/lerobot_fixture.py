"""Write a small LeRobot v3.0 dataset the way lerobot lays it out, without the `lerobot` package.

Faithful to the format rather than to lerobot's code paths: the file layout, templates, column names, Arrow
types and per-episode metadata are those of lerobot's v3.0 writer; the frame data of all episodes is in one
parquet file (a row group per episode), and each camera's episodes are in one mp4. As lerobot does, each
episode is encoded on its own (libsvtav1, yuv420p, g=2, crf=30) and the episode files are joined by stream
copy, each shifted by the duration of those before it, so every episode starts on a keyframe and its
`from_timestamp` is the sum of the previous durations (T / fps each).
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
CAMERA = "observation.images.top"
_ARMS = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]
MOTORS = [f"{side}_{j}" for side in ("left", "right") for j in _ARMS]


def write_lerobot_v3(root: str | Path, episodes: list[dict], fps: int = 50, video: bool = True,
                     codec: str = "libsvtav1", camera_key: str = CAMERA, version: str = "v3.0",
                     one_encoder_run: bool = False) -> Path:
    """Write `episodes` (dicts of frames uint8 [T, H, W, 3], action and state float32 [T, 14], task str, and
    optionally reward float32 [T] and done bool [T]) as a LeRobot v3 dataset in `root`; returns `root`.

    `one_encoder_run`: encode all episodes of a camera in one run with a keyframe every 12 frames instead of
    joining per-episode files, so episodes start between keyframes (the format allows it; a reader must then
    decode from the keyframe before an episode and drop the frames before its `from_timestamp`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    H, W = episodes[0]["frames"].shape[1:3]
    has_reward = any("reward" in e for e in episodes)
    tasks = list(dict.fromkeys(e["task"] for e in episodes))  # task_index = order of first appearance
    lengths = [len(e["action"]) for e in episodes]
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(int)

    features = {
        camera_key: {"dtype": "video" if video else "image", "shape": [H, W, 3], "names": ["height", "width", "channels"]},
        "action": {"dtype": "float32", "shape": [14], "names": MOTORS},
        "observation.state": {"dtype": "float32", "shape": [14], "names": MOTORS},
    }
    if has_reward:
        features["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
        features["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    features.update({
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    })

    # --- data/: one row per frame; Hugging Face `datasets` types (Sequence(length=14) is a fixed-size list,
    # Image a struct {bytes, path}), its feature description in the schema metadata, one row group per episode.
    fields = [] if video else [pa.field(camera_key, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))]
    fields += [pa.field("action", pa.list_(pa.float32(), 14)), pa.field("observation.state", pa.list_(pa.float32(), 14))]
    if has_reward:
        fields += [pa.field("next.reward", pa.float32()), pa.field("next.done", pa.bool_())]
    fields += [pa.field("timestamp", pa.float32())] + [pa.field(k, pa.int64()) for k in
                                                         ("frame_index", "episode_index", "index", "task_index")]
    vector = {"feature": {"dtype": "float32", "_type": "Value"}, "length": 14, "_type": "Sequence"}
    hf = {f.name: {"_type": "Image"} if f.name == camera_key else vector if f.name in ("action", "observation.state")
          else {"dtype": features[f.name]["dtype"], "_type": "Value"} for f in fields}
    schema = pa.schema(fields, metadata={"huggingface": json.dumps({"info": {"features": hf}})})
    data_path = root / DATA_PATH.format(chunk_index=0, file_index=0)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(data_path, schema, compression="snappy", use_dictionary=True) as writer:
        for i, e in enumerate(episodes):
            T = lengths[i]
            cols = {} if video else {camera_key: [{"bytes": _png(f), "path": f"frame-{t:06d}.png"}
                                                  for t, f in enumerate(e["frames"])]}
            cols["action"] = _fixed(e["action"])
            cols["observation.state"] = _fixed(e["state"])
            if has_reward:
                cols["next.reward"] = np.asarray(e.get("reward", np.zeros(T)), np.float32)
                cols["next.done"] = np.asarray(e.get("done", np.zeros(T, bool)), bool)
            cols["timestamp"] = (np.arange(T) / fps).astype(np.float32)
            cols["frame_index"] = np.arange(T)
            cols["episode_index"] = np.full(T, i)
            cols["index"] = np.arange(starts[i], starts[i + 1])
            cols["task_index"] = np.full(T, tasks.index(e["task"]))
            writer.write_table(pa.Table.from_pydict(cols, schema=schema))

    # --- videos/: each episode encoded alone, then joined by stream copy.
    video_meta: list[dict] = [{} for _ in episodes]
    if video:
        path = root / VIDEO_PATH.format(video_key=camera_key, chunk_index=0, file_index=0)
        t0 = 0.0
        for i, T in enumerate(lengths):
            video_meta[i] = {f"videos/{camera_key}/chunk_index": 0, f"videos/{camera_key}/file_index": 0,
                             f"videos/{camera_key}/from_timestamp": t0, f"videos/{camera_key}/to_timestamp": t0 + T / fps}
            t0 += T / fps
        frames = [e["frames"] for e in episodes]
        if one_encoder_run:
            path.parent.mkdir(parents=True, exist_ok=True)
            _encode(np.concatenate(frames), path, fps, codec, gop=12)
        else:
            _write_video(frames, path, fps, codec, root)
        features[camera_key]["info"] = {
            "video.height": int(H), "video.width": int(W), "video.codec": _codec_name(path), "video.pix_fmt": "yuv420p",
            "video.is_depth_map": False, "video.fps": fps, "video.channels": 3, "has_audio": False}

    # --- meta/episodes/: one row per episode, with per-episode statistics (stats/<feature>/<stat>).
    rows = []
    for i, e in enumerate(episodes):
        T = lengths[i]
        row = {"episode_index": i, "tasks": [e["task"]], "length": T,
               "data/chunk_index": 0, "data/file_index": 0,
               "dataset_from_index": int(starts[i]), "dataset_to_index": int(starts[i + 1]), **video_meta[i]}
        values = {camera_key: e["frames"], "action": e["action"], "observation.state": e["state"],
                  "timestamp": np.arange(T) / fps, "frame_index": np.arange(T), "episode_index": np.full(T, i),
                  "index": np.arange(starts[i], starts[i + 1]), "task_index": np.full(T, tasks.index(e["task"]))}
        for name, v in values.items():
            for stat, x in _stats(v, image=name == camera_key).items():
                row[f"stats/{name}/{stat}"] = x
        row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = 0, 0
        rows.append(row)
    ep_path = root / EPISODES_PATH.format(chunk_index=0, file_index=0)
    ep_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), ep_path, compression="snappy")

    # --- meta/tasks.parquet: lerobot writes a pandas frame {task_index} indexed by the task string, so the
    # strings land in the '__index_level_0__' column named by the 'pandas' schema metadata.
    pandas_meta = {"index_columns": ["__index_level_0__"],
                   "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                                       "metadata": {"encoding": "UTF-8"}}],
                   "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                                "numpy_type": "int64", "metadata": None},
                               {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": None}],
                   "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3"}
    task_table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                           "__index_level_0__": pa.array(tasks, pa.string())})
    pq.write_table(task_table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}), root / "meta/tasks.parquet")

    # --- meta/stats.json (whole dataset) and meta/info.json.
    every = {camera_key: np.concatenate([e["frames"] for e in episodes]),
             "action": np.concatenate([e["action"] for e in episodes]),
             "observation.state": np.concatenate([e["state"] for e in episodes])}
    (root / "meta/stats.json").write_text(json.dumps({k: _stats(v, image=k == camera_key) for k, v in every.items()}, indent=4))
    info = {
        "codebase_version": version, "robot_type": "aloha", "total_episodes": len(episodes),
        "total_frames": int(starts[-1]), "total_tasks": len(tasks), "chunks_size": 1000,
        "data_files_size_in_mb": 100, "video_files_size_in_mb": 500, "fps": fps,
        "splits": {"train": f"0:{len(episodes)}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH if video else None,
        "features": features,
    }
    (root / "meta/info.json").write_text(json.dumps(info, indent=4))
    return root


def _fixed(a: np.ndarray):
    import pyarrow as pa

    a = np.ascontiguousarray(a, np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


def _png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def _stats(v: np.ndarray, image: bool = False) -> dict:
    """lerobot's per-feature statistics: per dimension, images per channel in [0, 1] shaped [3, 1, 1]."""
    raw, v = v, np.asarray(v, np.float64)
    if image:
        x = v.reshape(-1, 3) / 255.0
        return {k: f(x, axis=0).reshape(3, 1, 1).tolist() for k, f in
                (("min", np.min), ("max", np.max), ("mean", np.mean), ("std", np.std))} | {"count": [len(v)]}
    x = np.asarray(raw).reshape(len(v), -1)  # min and max keep the feature's dtype (ints stay ints), as lerobot's do
    return {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": v.reshape(len(v), -1).mean(0).tolist(),
            "std": v.reshape(len(v), -1).std(0).tolist(), "count": [len(v)]}


def _write_video(episodes: list[np.ndarray], path: Path, fps: int, codec: str, root: Path) -> None:
    import av

    tmp = Path(tempfile.mkdtemp(dir=root))
    try:
        parts = []
        for i, frames in enumerate(episodes):
            part = tmp / f"episode_{i:06d}.mp4"
            _encode(frames, part, fps, codec)
            parts.append((part, len(frames)))
        path.parent.mkdir(parents=True, exist_ok=True)
        with av.open(str(path), "w") as out:
            ostream, offset = None, 0.0
            for part, T in parts:
                with av.open(str(part)) as src:
                    istream = src.streams.video[0]
                    if ostream is None:  # opaque: copy the codec parameters without needing an AV1 encoder by that name
                        ostream = out.add_stream_from_template(istream, opaque=True)
                    shift = round(offset / istream.time_base)
                    for packet in src.demux(istream):
                        if packet.dts is None:
                            continue  # the demuxer's empty flush packet
                        packet.pts += shift
                        packet.dts += shift
                        packet.stream = ostream
                        out.mux(packet)
                offset += T / fps
    finally:
        shutil.rmtree(tmp)


def _encode(frames: np.ndarray, path: Path, fps: int, codec: str, gop: int = 2) -> None:
    """lerobot's encoder settings: yuv420p, a keyframe every `gop` frames, crf 30 where the codec has one."""
    import av

    opts = {"g": str(gop)} | ({"crf": "30"} if codec in ("libsvtav1", "libx264", "h264", "libx265", "hevc") else {})
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps, options=opts)
        stream.pix_fmt, stream.width, stream.height = "yuv420p", frames.shape[2], frames.shape[1]
        for t, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts = t
            out.mux(stream.encode(vf))
        out.mux(stream.encode())


def _codec_name(path: Path) -> str:
    import av

    with av.open(str(path)) as c:
        return c.streams.video[0].codec_context.codec.canonical_name  # 'av1', 'h264': what ffprobe calls codec_name
