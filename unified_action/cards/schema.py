"""The machine-readable header of a data card, as pydantic models.

A data card is `data_cards/<name>.md`: Markdown with a YAML header between `---` lines (the Hugging Face
dataset-card convention). The header says where the data comes from, how fast it is controlled, which
cameras it has, and how every native action field maps onto the unified slots (`action_space.py`).

This module checks structure and types; `card.py` checks meaning (known slots, units, ranges, tables).
Unknown keys are refused, so a typo never silently drops a field.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

SLUG = r"^[a-z0-9][a-z0-9_\-]*$"
Number = float | int
PerDim = Number | list[Number]  # one value for every dimension, or one per dimension


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GymnasiumSource(_Strict):
    type: Literal["gymnasium"]
    env_id: str = Field(description="gymnasium id, e.g. 'ALE/Pong-v5'; its module comes from a fixed allow-list")
    env_kwargs: dict[str, object] = Field(default_factory=dict)
    # steps run (under the behaviour policy) before recording starts: e.g. CarRacing's camera zoom-in, which no
    # action affects, would teach a world model that actions do nothing
    warmup_steps: int = Field(default=0, ge=0, le=10_000)


class RLDSSource(_Strict):
    type: Literal["rlds"]
    builder_dir: str = Field(description="tensorflow-datasets builder directory, e.g. 'fractal20220817_data/0.1.0'")
    split: str = "train"
    homepage: str | None = None


class LeRobotSource(_Strict):
    type: Literal["lerobot"]
    dataset_dir: str = Field(description="local LeRobot v3 dataset directory (meta/info.json, data/, videos/)")
    repo_id: str | None = None


class NumpySource(_Strict):
    type: Literal["numpy"]
    path: str = Field(description="directory of .npy/.npz episodes")


Source = Annotated[GymnasiumSource | RLDSSource | LeRobotSource | NumpySource, Field(discriminator="type")]


class Camera(_Strict):
    name: str = Field(pattern=SLUG)
    key: str = Field(description="path of the image in an observation, e.g. 'observation/image'")
    height: int = Field(gt=0, le=8192)
    width: int = Field(gt=0, le=8192)
    # Some simulators hand images over upside down (Meta-World's MuJoCo cameras); recording flips them back.
    flip_vertical: bool = False


class Range(_Strict):
    low: PerDim
    high: PerDim


class Identity(_Strict):
    type: Literal["identity"] = "identity"


class Affine(_Strict):
    """unified = native * scale + offset, per dimension; `units` are the units after the transform."""

    type: Literal["affine"]
    scale: PerDim = 1.0
    offset: PerDim = 0.0
    units: str | list[str]


class RpyToRotvec(_Strict):
    """Three roll/pitch/yaw angles (extrinsic xyz, rad) to a rotation vector (rad)."""

    type: Literal["rpy_to_rotvec"]


class Table(_Strict):
    """A categorical native value (an index, or a one-hot vector) to one row of slot values."""

    type: Literal["table"]
    input: Literal["index", "onehot"] = "index"
    labels: list[str] | None = Field(default=None, description="meaning of each native value, for people")
    rows: list[list[Number]] = Field(min_length=1)
    # Several native values may mean the same slot values (RT-1's 3-way one-hot onto one terminate flag).
    # Off by default so a typo repeating a row is caught; when on, decoding returns the first matching row.
    allow_repeated_rows: bool = False


Transform = Annotated[Identity | Affine | RpyToRotvec | Table, Field(discriminator="type")]


class ActionField(_Strict):
    path: str = Field(min_length=1, description="native field, '/' between nested keys: 'action/world_vector'")
    dtype: Literal["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"]
    shape: list[Annotated[int, Field(gt=0)]] = Field(max_length=2)
    kind: Literal["continuous", "binary", "categorical"]
    units: str | list[str]
    range: Range | None = None
    slots: list[str] = Field(min_length=1, description="unified slots this field fills, in output order")
    transform: Transform = Identity()
    description: str | None = None


class ObservationField(_Strict):
    path: str = Field(min_length=1)
    shape: list[Annotated[int, Field(gt=0)]] = Field(default_factory=list)
    units: str | list[str] | None = None
    description: str | None = None


class Instruction(_Strict):
    """Where the language instruction is: in each step, in the observation, per episode, or one constant."""

    location: Literal["step", "observation", "episode", "constant"]
    path: str | None = None
    text: str | None = None


class FastParams(_Strict):
    scale: Literal["auto"] | Annotated[float, Field(gt=0, le=10000)] = "auto"
    target_rmse: float = Field(default=0.01, gt=0, le=1, description="normalized RMSE that scale='auto' aims at")
    vocab_size: int = Field(default=1024, ge=300, le=16384)


class TokenizerParams(_Strict):
    kind: Literal["bin", "fast", "discrete"]
    chunk_length: int = Field(gt=0, le=1000, description="actions per chunk (one chunk: one frame interval or ~1 s)")
    fast: FastParams = FastParams()


class CardHeader(_Strict):
    name: str = Field(pattern=SLUG)
    pretty_name: str | None = None
    license: str = Field(min_length=1)
    embodiment: str = Field(pattern=SLUG)
    source: Source
    control_frequency_hz: float = Field(gt=0, le=10000)
    cameras: list[Camera] = Field(default_factory=list)
    action: list[ActionField] = Field(min_length=1)
    proprio: list[ObservationField] = Field(default_factory=list)
    instruction: Instruction | None = None
    tokenizer: TokenizerParams
    action_space_version: int = Field(default=1, ge=1)
    # Hugging Face dataset-card keys, kept so cards render on the Hub.
    tags: list[str] = Field(default_factory=list)
    task_categories: list[str] = Field(default_factory=list)
    language: list[str] = Field(default_factory=list)
    size_categories: list[str] = Field(default_factory=list)
