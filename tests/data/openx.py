"""Small real TFDS builds with the published schemas of two Open X-Embodiment datasets, for tests.

`build_rt1_like` reproduces `fractal20220817_data/0.1.0` (RT-1): every episode-level and step-level
feature of the TFDS catalog entry (tensorflow/datasets docs/catalog/fractal20220817_data.md), with the
dict action, the instruction and its 512-d embedding inside the observation, no discount and no
episode_metadata. Images are 256x320 JPEG, as in the Open X-Embodiment releases.

`build_bridge_like` reproduces `bridge_dataset/1.0.0`, the BridgeData V2 project's RLDS export: four
256x256 JPEG cameras (image_0..image_3, dummy zeros where an episode lacks one), state[7], action[7],
discount, step-level language_instruction and language_embedding[512], and episode_metadata with file_path,
episode_id (int32) and has_image_0..3 / has_language flags; splits 'train' and 'val'. Schema from the
256x256 builder of kpertsch/bridge_rlds_builder (as kept in its forks), matching the record keys that
readers of the released files parse.

Values are seeded random but plausible (small deltas, unit quaternions, smooth images); episode lengths vary.
Both builders write into `root/<name>/<version>` so a card's `builder_dir` finds them, in either record format.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

RT1_INSTRUCTIONS = ["pick coke can", "move blue chip bag near apple", "open middle drawer", "place rxbar chocolate into top drawer"]
BRIDGE_INSTRUCTIONS = ["put the spoon in the pot", "open the microwave", "move the red block to the left burner", ""]


def _tfds():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow_datasets as tfds

    return tfds


def _build(name: str, version: str, features, splits: dict[str, Callable[[], Iterator]], root: Path, file_format: str,
           shards: int | None = None) -> Path:
    """Run a GeneratorBasedBuilder with these features over these split generators; returns the builder dir.

    `shards` forces that many record files per split (the real releases have hundreds) instead of tfds's choice.
    """
    tfds = _tfds()

    class _Fixture(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(version)
        code_path = None  # defined in a test module: no checksums file to look up

        def _info(self):
            # Shuffling left on, as in the real releases: records are stored in key-hash order.
            return tfds.core.DatasetInfo(builder=self, features=features)

        def _split_generators(self, dl_manager):
            return {split: make() for split, make in splits.items()}

        def _generate_examples(self):  # unused: _split_generators hands over the generators directly
            raise NotImplementedError

    _Fixture.name = name
    with tempfile.TemporaryDirectory() as downloads:
        config = tfds.download.DownloadConfig(num_shards=shards)
        _Fixture(data_dir=str(root), file_format=file_format).download_and_prepare(download_dir=downloads, download_config=config)
    return Path(root) / name / version


def _smooth_frames(rng: np.random.Generator, T: int, h: int, w: int) -> np.ndarray:
    """[T, h, w, 3] uint8: a coarse random colour field upsampled bilinearly, drifting a little each step."""
    from PIL import Image

    coarse = rng.uniform(0, 255, (6, 8, 3))
    drift = rng.normal(0, 6, (6, 8, 3))
    out = np.empty((T, h, w, 3), np.uint8)
    for t in range(T):
        small = np.clip(coarse + t * drift, 0, 255).astype(np.uint8)
        out[t] = np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))
    return out


def _lengths(rng: np.random.Generator, episodes: int, steps: int) -> list[int]:
    return [max(2, steps + int(d)) for d in rng.integers(-2, 3, episodes)]


def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    v = rng.normal(size=shape).astype(np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------------------
# RT-1: fractal20220817_data/0.1.0
# ------------------------------------------------------------------------------------------------

_RT1_ATTRIBUTES = ("collection_mode", "data_type", "env", "location", "objects_family", "task_family")


def rt1_features():
    """The published fractal20220817_data/0.1.0 feature tree."""
    tfds = _tfds()
    f32, F = np.float32, tfds.features

    def scalar(dtype):  # the catalog lists these as Tensor of shape (), not Scalar (only reward is a Scalar)
        return F.Tensor(shape=(), dtype=dtype)

    return F.FeaturesDict({
        "aspects": {k: scalar(np.bool_) for k in ("already_success", "feasible", "has_aspects", "success", "undesirable")},
        "attributes": {**{k: scalar(np.int64) for k in _RT1_ATTRIBUTES}, **{f"{k}_name": scalar(np.object_) for k in _RT1_ATTRIBUTES}},
        "steps": F.Dataset({
            "action": {
                "base_displacement_vector": F.Tensor(shape=(2,), dtype=f32),
                "base_displacement_vertical_rotation": F.Tensor(shape=(1,), dtype=f32),
                "gripper_closedness_action": F.Tensor(shape=(1,), dtype=f32),
                "rotation_delta": F.Tensor(shape=(3,), dtype=f32),
                "terminate_episode": F.Tensor(shape=(3,), dtype=np.int32),
                "world_vector": F.Tensor(shape=(3,), dtype=f32),
            },
            "is_first": scalar(np.bool_),
            "is_last": scalar(np.bool_),
            "is_terminal": scalar(np.bool_),
            "observation": {
                "base_pose_tool_reached": F.Tensor(shape=(7,), dtype=f32),
                "gripper_closed": F.Tensor(shape=(1,), dtype=f32),
                "gripper_closedness_commanded": F.Tensor(shape=(1,), dtype=f32),
                "height_to_bottom": F.Tensor(shape=(1,), dtype=f32),
                "image": F.Image(shape=(256, 320, 3), encoding_format="jpeg"),
                "natural_language_embedding": F.Tensor(shape=(512,), dtype=f32),
                "natural_language_instruction": scalar(np.object_),  # a string Tensor, not Text
                "orientation_box": F.Tensor(shape=(2, 3), dtype=f32),
                "orientation_start": F.Tensor(shape=(4,), dtype=f32),
                "robot_orientation_positions_box": F.Tensor(shape=(3, 3), dtype=f32),
                "rotation_delta_to_go": F.Tensor(shape=(3,), dtype=f32),
                "src_rotation": F.Tensor(shape=(4,), dtype=f32),
                "vector_to_go": F.Tensor(shape=(3,), dtype=f32),
                "workspace_bounds": F.Tensor(shape=(3, 3), dtype=f32),
            },
            "reward": F.Scalar(f32),
        }),
    })


def _rt1_episode(rng: np.random.Generator, i: int, T: int) -> dict:
    f32 = np.float32
    last = np.arange(T) == T - 1
    instruction = RT1_INSTRUCTIONS[i % len(RT1_INSTRUCTIONS)]
    closed = (np.arange(T) >= T // 2).astype(f32)[:, None]  # grasps halfway through
    pose = np.concatenate([np.array([0.55, 0.0, 0.85]) + np.cumsum(rng.normal(0, 0.01, (T, 3)), 0), _unit(rng, T, 4)], 1)
    terminate = np.tile(np.array([0, 1, 0], np.int32), (T, 1))
    terminate[last] = [1, 0, 0]  # one-hot: terminate on the last step, continue before
    gripper_cmd = np.where(np.arange(T) == T // 2, 1.0, 0.0).astype(f32)[:, None]  # relative: close once, else keep
    embedding = _unit(rng, 512)
    steps = {
        "action": {
            "base_displacement_vector": np.zeros((T, 2), f32),  # table-top episodes: the base stays put
            "base_displacement_vertical_rotation": np.zeros((T, 1), f32),
            "gripper_closedness_action": gripper_cmd,
            "rotation_delta": rng.normal(0, 0.05, (T, 3)).astype(f32),
            "terminate_episode": terminate,
            "world_vector": rng.normal(0, 0.03, (T, 3)).astype(f32),
        },
        "is_first": np.arange(T) == 0,
        "is_last": last,
        "is_terminal": last,
        "observation": {
            "base_pose_tool_reached": pose.astype(f32),
            "gripper_closed": closed,
            "gripper_closedness_commanded": closed,
            "height_to_bottom": rng.uniform(0.1, 0.4, (T, 1)).astype(f32),
            "image": _smooth_frames(rng, T, 256, 320),
            "natural_language_embedding": np.tile(embedding, (T, 1)),
            "natural_language_instruction": [instruction] * T,
            "orientation_box": rng.uniform(-1, 1, (T, 2, 3)).astype(f32),
            "orientation_start": np.tile(_unit(rng, 4), (T, 1)),
            "robot_orientation_positions_box": rng.uniform(-1, 1, (T, 3, 3)).astype(f32),
            "rotation_delta_to_go": rng.normal(0, 0.2, (T, 3)).astype(f32),
            "src_rotation": np.tile(_unit(rng, 4), (T, 1)),
            "vector_to_go": rng.normal(0, 0.1, (T, 3)).astype(f32),
            "workspace_bounds": np.tile(np.array([[0.3, -0.4, 0.6], [0.9, 0.4, 1.1], [0, 0, 0]], f32), (T, 1, 1)),
        },
        "reward": last.astype(f32),  # 1 on the final step of a successful demo
    }
    names = ["teleop", "task", "kitchen", "mk1", "17_objects", "pick"]
    attributes = {**{k: int(rng.integers(0, 5)) for k in _RT1_ATTRIBUTES},
                  **{f"{k}_name": n for k, n in zip(_RT1_ATTRIBUTES, names)}}
    aspects = {k: bool(rng.integers(0, 2)) for k in ("already_success", "feasible", "has_aspects", "success", "undesirable")}
    return {"aspects": aspects, "attributes": attributes, "steps": steps}


def build_rt1_like(root: str | Path, episodes: int = 3, steps: int = 6, seed: int = 0, file_format: str = "tfrecord",
                   shards: int | None = None) -> Path:
    """A small fractal20220817_data/0.1.0 build under root; returns root/fractal20220817_data/0.1.0."""
    rng = np.random.default_rng(seed)
    lengths = _lengths(rng, episodes, steps)

    def train():
        for i, T in enumerate(lengths):
            yield f"episode_{i}", _rt1_episode(rng, i, T)

    return _build("fractal20220817_data", "0.1.0", rt1_features(), {"train": train}, Path(root), file_format, shards)


# ------------------------------------------------------------------------------------------------
# Bridge: bridge_dataset/1.0.0
# ------------------------------------------------------------------------------------------------


def bridge_features():
    """The bridge_dataset/1.0.0 feature tree (the BridgeData V2 RLDS export)."""
    tfds = _tfds()
    f32, F = np.float32, tfds.features
    image = {f"image_{k}": F.Image(shape=(256, 256, 3), dtype=np.uint8, encoding_format="jpeg") for k in range(4)}
    return F.FeaturesDict({
        "steps": F.Dataset({
            "observation": {**image, "state": F.Tensor(shape=(7,), dtype=f32)},
            "action": F.Tensor(shape=(7,), dtype=f32),
            "discount": F.Scalar(dtype=f32),
            "reward": F.Scalar(dtype=f32),
            "is_first": F.Scalar(dtype=np.bool_),
            "is_last": F.Scalar(dtype=np.bool_),
            "is_terminal": F.Scalar(dtype=np.bool_),
            "language_instruction": F.Text(),
            "language_embedding": F.Tensor(shape=(512,), dtype=f32),
        }),
        "episode_metadata": {
            "file_path": F.Text(),
            "episode_id": F.Scalar(dtype=np.int32),
            **{f"has_image_{k}": F.Scalar(dtype=np.bool_) for k in range(4)},
            "has_language": F.Scalar(dtype=np.bool_),
        },
    })


def _bridge_episode(rng: np.random.Generator, i: int, T: int, split: str) -> dict:
    f32 = np.float32
    last = np.arange(T) == T - 1
    instruction = BRIDGE_INSTRUCTIONS[i % len(BRIDGE_INSTRUCTIONS)]  # one in four has none, as some real ones
    n_cams = 1 + i % 4  # image_0 always; the others are absent in some episodes (zeros, has_image_k False)
    observation = {f"image_{k}": _smooth_frames(rng, T, 256, 256) if k < n_cams else np.zeros((T, 256, 256, 3), np.uint8)
                   for k in range(4)}
    xyz = np.array([0.3, 0.0, 0.1]) + np.cumsum(rng.normal(0, 0.01, (T, 3)), 0)
    rpy = np.cumsum(rng.normal(0, 0.05, (T, 3)), 0)
    gripper = (np.arange(T) < T // 2).astype(f32)  # 1 open, then closed
    observation["state"] = np.concatenate([xyz, rpy, gripper[:, None]], 1).astype(f32)
    action = np.concatenate([rng.normal(0, 0.01, (T, 3)), rng.normal(0, 0.05, (T, 3)), gripper[:, None]], 1).astype(f32)
    action[-1] = 0  # the builder appends a null action at the end
    embedding = _unit(rng, 512) if instruction else np.zeros(512, f32)
    file_path = f"/data/bridge_data_v2/toykitchen{i % 3}/{split}/out.npy"
    steps = {
        "observation": observation,
        "action": action,
        "discount": np.ones(T, f32),
        "reward": last.astype(f32),
        "is_first": np.arange(T) == 0,
        "is_last": last,
        "is_terminal": last,
        "language_instruction": [instruction] * T,
        "language_embedding": np.tile(embedding, (T, 1)),
    }
    meta = {"file_path": file_path, "episode_id": i, **{f"has_image_{k}": k < n_cams for k in range(4)}, "has_language": bool(instruction)}
    return {"steps": steps, "episode_metadata": meta}


def build_bridge_like(root: str | Path, episodes: int = 3, steps: int = 6, seed: int = 0, file_format: str = "tfrecord",
                      shards: int | None = None) -> Path:
    """A small bridge_dataset/1.0.0 build under root ('train' of `episodes`, 'val' of one); returns its builder dir."""
    rng = np.random.default_rng(seed)
    lengths = _lengths(rng, episodes, steps)

    def split(name: str, lens: list[int]):
        def generate():
            for i, T in enumerate(lens):
                yield f"{name}_{i}", _bridge_episode(rng, i, T, name)
        return generate

    splits = {"train": split("train", lengths), "val": split("val", [steps])}
    return _build("bridge_dataset", "1.0.0", bridge_features(), splits, Path(root), file_format, shards)
