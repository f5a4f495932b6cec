"""The machine-readable header of a data card, as pydantic models.

A data card is `data_cards/<name>.md`: Markdown with a YAML header between `---` lines (the Hugging Face
dataset-card convention). The header says where the data comes from, how fast it is controlled, which
cameras it has, and how every native action field maps onto the unified slots (`action_space.py`).

This module checks structure and types; `card.py` checks meaning (known slots, units, ranges, tables).
Unknown keys are refused, so a typo never silently drops a field.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SLUG = r"^[a-z0-9][a-z0-9_\-]*$"
# What a card may hold, so that checking one is bounded work (the YAML itself is bounded by safe_yaml.py).
MAX_DIMS = 4096  # values in one native action field (the unified space has a few hundred slots)
MAX_ROWS = 4096  # rows of a table transform
MAX_ITEMS = 256  # cameras, action fields, proprio fields, tags, slots of a field, ...
MAX_IMAGE_SIDE = 8192  # pixels of a camera's height or width (and of a dataset's image_size)
MAX_FRAME_EVERY = 64  # steps between a recording's stored frames (source.frame_every), and what a shard may claim
Text = Annotated[str, Field(max_length=4000)]
Name = Annotated[str, Field(max_length=200)]
Number = float | int
PerDim = Number | Annotated[list[Number], Field(max_length=MAX_DIMS)]  # one value for every dimension, or one per dimension
Units = Name | Annotated[list[Name], Field(max_length=MAX_DIMS)]

# gymnasium id namespace or prefix -> the module whose import registers those ids. A card's env_id must use one
# of these or be one of gymnasium's own ids: a 'module:' prefix (gymnasium imports it) is never accepted, so
# reading or recording a card can't make us import a module the card names.
ENV_MODULES = {
    "ALE/": "ale_py",
    "gym_aloha/": "gym_aloha",
    "gym_pusht/": "gym_pusht",
    "Meta-World/": "metaworld",
    "highway": "highway_env",
    "racetrack": "highway_env",
    "parking": "highway_env",
    "merge": "highway_env",
    "roundabout": "highway_env",
    "intersection": "highway_env",
}
GYMNASIUM_NAMESPACES = ("phys2d", "tabular")  # gymnasium's own namespaced ids
_ENV_ID = re.compile(r"^(?:(?P<ns>[A-Za-z0-9_\-]+)/)?[A-Za-z0-9_\-.]+$")


class _Strict(BaseModel):
    # NaN and infinities are refused everywhere: no scale, offset, range or table value may be one
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _size(value, budget: int = 1000) -> int:
    """Values in a nested structure of dicts and lists (stops counting past `budget`)."""
    n, todo = 0, [value]
    while todo and n <= budget:
        v = todo.pop()
        n += 1
        if isinstance(v, dict):
            todo += list(v.keys()) + list(v.values())
        elif isinstance(v, list | tuple):
            todo += list(v)
    return n


class GymnasiumSource(_Strict):
    type: Literal["gymnasium"]
    env_id: str = Field(max_length=200, description="gymnasium id, e.g. 'ALE/Pong-v5'; its module comes from a fixed allow-list")
    env_kwargs: dict[str, object] = Field(default_factory=dict)
    # steps run (under the behaviour policy) before recording starts: e.g. CarRacing's camera zoom-in, which no
    # action affects, would teach a world model that actions do nothing
    warmup_steps: int = Field(default=0, ge=0, le=10_000)
    # a discrete behaviour policy's chance to repeat its last action each step (policies.StickyRandom): long runs
    # pin Pong's paddle to a wall, where no action moves it
    sticky_repeat: float = Field(default=0.9, ge=0.0, lt=1.0)
    # render and store a frame only every k steps (proprio, actions, rewards still every step): the loader shows
    # frames one action chunk apart, and rendering is most of a MuJoCo recording's time. k must divide
    # tokenizer.chunk_length (checked for the whole card: card.check_semantics)
    frame_every: int = Field(default=1, ge=1, le=MAX_FRAME_EVERY)

    @field_validator("env_id")
    @classmethod
    def _allowed_env(cls, v: str) -> str:
        m = _ENV_ID.match(v)
        if m is None:
            raise ValueError("expected a gymnasium id '[namespace/]Name-vN' without a 'module:' prefix "
                             "(a prefix makes gymnasium import that module)")
        ns = m.group("ns")
        if ns is not None and f"{ns}/" not in ENV_MODULES and ns not in GYMNASIUM_NAMESPACES:
            known = sorted(k.rstrip("/") for k in ENV_MODULES if k.endswith("/")) + list(GYMNASIUM_NAMESPACES)
            raise ValueError(f"namespace '{ns}' is not on the allow-list of simulators ({', '.join(known)})")
        return v

    @field_validator("env_kwargs")
    @classmethod
    def _small_kwargs(cls, v: dict) -> dict:
        if _size(v) > 1000:
            raise ValueError("more than 1000 values; env_kwargs are a few settings of the simulator")
        return v


# robosuite: the tasks, arms and controllers a card may name (robosuite_arms.py builds them; nothing is imported by a
# name from the card). JOINT_VELOCITY is absent: robosuite 1.5.2 cannot construct it.
ROBOSUITE_TASKS = ("Lift", "Stack", "PickPlaceCan", "Door")
ROBOSUITE_ROBOTS = ("Panda", "Sawyer", "IIWA", "Jaco", "Kinova3", "UR5e")
ROBOSUITE_CONTROLLERS = ("OSC_POSE", "JOINT_POSITION")


class FreeCamera(_Strict):
    """A MuJoCo free camera: it looks at `lookat` (world frame, m) from `distance` m away, turned by `azimuth`
    and `elevation` degrees (MuJoCo's MjvCamera)."""
    lookat: Annotated[list[float], Field(min_length=3, max_length=3)]
    distance: float = Field(gt=0, le=20)
    azimuth: float = Field(ge=-360, le=360)
    elevation: float = Field(ge=-90, le=90)


class RobosuiteSource(_Strict):
    type: Literal["robosuite"]
    task: Literal[ROBOSUITE_TASKS]  # type: ignore[valid-type]
    robot: Literal[ROBOSUITE_ROBOTS]  # type: ignore[valid-type]
    controller: Literal[ROBOSUITE_CONTROLLERS]  # type: ignore[valid-type]
    control_freq: int = Field(default=20, ge=1, le=500)
    camera: FreeCamera
    warmup_steps: int = Field(default=0, ge=0, le=10_000)
    sticky_repeat: float = Field(default=0.9, ge=0.0, lt=1.0)  # unused (no discrete actions); the sims share one start
    frame_every: int = Field(default=1, ge=1, le=MAX_FRAME_EVERY)  # as GymnasiumSource's: render a frame every k steps


# PettingZoo scenes with several agents (pettingzoo_scenes.py allow-lists them and the keyword arguments each takes)
PETTINGZOO_SCENES = ("cooperative_pong_v6", "simple_spread_v3")


class PettingZooSource(_Strict):
    """A scene with several agents: the card lists them under `agents`, in the scene's order."""
    type: Literal["pettingzoo"]
    scene: Literal[PETTINGZOO_SCENES]  # type: ignore[valid-type]
    scene_kwargs: dict[str, bool | int | float] = Field(default_factory=dict, max_length=16)
    warmup_steps: int = Field(default=0, ge=0, le=10_000)
    sticky_repeat: float = Field(default=0.8, ge=0.0, lt=1.0)  # each agent's discrete behaviour policy
    frame_every: int = Field(default=1, ge=1, le=MAX_FRAME_EVERY)


SIMULATOR_SOURCES = ("gymnasium", "robosuite", "pettingzoo")  # the source types `uact data record` rolls out


class RLDSSource(_Strict):
    type: Literal["rlds"]
    builder_dir: Name = Field(description="tensorflow-datasets builder directory, e.g. 'fractal20220817_data/0.1.0'")
    split: str = "train"
    homepage: str | None = None


class LeRobotSource(_Strict):
    type: Literal["lerobot"]
    dataset_dir: str = Field(description="local LeRobot v3 dataset directory (meta/info.json, data/, videos/)")
    repo_id: str | None = None


class NumpySource(_Strict):
    type: Literal["numpy"]
    path: str = Field(description="directory of .npy/.npz episodes")


Source = Annotated[GymnasiumSource | RobosuiteSource | PettingZooSource | RLDSSource | LeRobotSource | NumpySource, Field(discriminator="type")]


class Crop(_Strict):
    top: int = Field(0, ge=0, le=MAX_IMAGE_SIDE)
    bottom: int = Field(0, ge=0, le=MAX_IMAGE_SIDE)
    left: int = Field(0, ge=0, le=MAX_IMAGE_SIDE)
    right: int = Field(0, ge=0, le=MAX_IMAGE_SIDE)


class Camera(_Strict):
    name: str = Field(pattern=SLUG, max_length=200)
    key: Name = Field(description="path of the image in an observation, e.g. 'observation/image'")
    height: int = Field(gt=0, le=MAX_IMAGE_SIDE)
    width: int = Field(gt=0, le=MAX_IMAGE_SIDE)
    # Some simulators hand images over upside down (Meta-World's MuJoCo cameras); recording flips them back.
    flip_vertical: bool = False
    # The region of interest, as pixels cut from each edge before the frame is fitted to the shards' size: a
    # game's playfield without its score bar and borders fills more of a 64x64 frame (Pong's paddle: 1x5
    # pixels letterboxed, 2x6 with the playfield alone)
    crop: Crop | None = None

    @model_validator(mode="after")
    def _crop_fits(self) -> Camera:
        c = self.crop
        if c is not None and c.top + c.bottom >= self.height:
            raise ValueError(f"crop top+bottom {c.top + c.bottom} >= height {self.height}")
        if c is not None and c.left + c.right >= self.width:
            raise ValueError(f"crop left+right {c.left + c.right} >= width {self.width}")
        return self

    def cropped(self, frames: np.ndarray) -> np.ndarray:
        """frames [T, H, W, 3] -> the region of interest (all of it without a crop)."""
        c = self.crop
        if c is None:
            return frames
        return frames[:, c.top:frames.shape[1] - c.bottom, c.left:frames.shape[2] - c.right]


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
    units: Units


class RpyToRotvec(_Strict):
    """Three roll/pitch/yaw angles (extrinsic xyz, rad) to a rotation vector (rad)."""

    type: Literal["rpy_to_rotvec"]


class Table(_Strict):
    """A categorical native value (an index, or a one-hot vector) to one row of slot values."""

    type: Literal["table"]
    input: Literal["index", "onehot"] = "index"
    labels: list[Name] | None = Field(default=None, max_length=MAX_ROWS, description="meaning of each native value, for people")
    rows: list[Annotated[list[Number], Field(max_length=MAX_ITEMS)]] = Field(min_length=1, max_length=MAX_ROWS)
    # Several native values may mean the same slot values (RT-1's 3-way one-hot onto one terminate flag).
    # Off by default so a typo repeating a row is caught; when on, decoding returns the first matching row.
    allow_repeated_rows: bool = False


Transform = Annotated[Identity | Affine | RpyToRotvec | Table, Field(discriminator="type")]


FieldKind = Literal["continuous", "binary", "categorical"]
FLAT_KEYS = ("units", "slots", "transform", "range")  # what a field maps with as a whole, or each part for itself


class ActionPart(_Strict):
    """A run of values of a flat native vector with its own slots, units, kind and transform.

    Open-X vectors mix kinds in one array (Bridge: xyz delta, roll/pitch/yaw delta, gripper in one float[7]);
    parts let each run convert on its own (the rpy run through rpy_to_rotvec, say)."""

    dims: list[Annotated[int, Field(strict=True, ge=0, le=MAX_DIMS)]] = Field(
        min_length=2, max_length=2, description="[start, stop): half-open range of the field's flattened values")
    slots: list[Name] = Field(min_length=1, max_length=MAX_ITEMS, description="unified slots this part fills, in output order")
    units: Units
    kind: FieldKind | None = Field(default=None, description="default: the field's kind")
    range: Range | None = None
    transform: Transform = Identity()
    description: Text | None = None

    @property
    def start(self) -> int:
        return self.dims[0]

    @property
    def stop(self) -> int:
        return self.dims[1]

    @property
    def size(self) -> int:
        return max(0, self.stop - self.start)


class ActionField(_Strict):
    """A native action field, mapped as a whole (units, slots, transform, range) or split into `parts`.

    Which keys a field has is checked in card.py (one precise line instead of pydantic's union errors)."""

    path: Name = Field(min_length=1, description="native field, '/' between nested keys: 'action/world_vector'")
    dtype: Literal["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"]
    shape: list[Annotated[int, Field(gt=0, le=MAX_DIMS)]] = Field(max_length=2)
    kind: FieldKind
    units: Units | None = None
    range: Range | None = None
    slots: list[Name] | None = Field(default=None, min_length=1, max_length=MAX_ITEMS,
                                     description="unified slots this field fills, in output order")
    transform: Transform | None = None  # identity when not given
    parts: list[ActionPart] | None = Field(default=None, min_length=1, max_length=MAX_ITEMS)
    description: Text | None = None

    @field_validator("shape")
    @classmethod
    def _bounded(cls, v: list[int]) -> list[int]:
        if math.prod(v) > MAX_DIMS:
            raise ValueError(f"at most {MAX_DIMS} values in one action field")
        return v

    @property
    def size(self) -> int:
        """Values in the field: prod(shape), one for a scalar."""
        return math.prod(self.shape) if self.shape else 1

    def as_parts(self) -> tuple[ActionPart, ...]:
        """The field as parts, each with its kind and transform filled in; a field mapped as a whole is one part
        over all its values. Only for a field that card.check_semantics accepted."""
        if self.parts is None:
            return (ActionPart(dims=[0, self.size], slots=self.slots, units=self.units, kind=self.kind, range=self.range,
                               transform=self.transform or Identity()),)
        return tuple(p if p.kind is not None else p.model_copy(update={"kind": self.kind}) for p in self.parts)


class ObservationField(_Strict):
    path: Name = Field(min_length=1)
    shape: list[Annotated[int, Field(gt=0, le=MAX_DIMS)]] = Field(default_factory=list, max_length=4)
    units: Units | None = None
    description: Text | None = None


class Instruction(_Strict):
    """Where the language instruction is: in each step, in the observation, per episode, or one constant."""

    location: Literal["step", "observation", "episode", "constant"]
    path: Name | None = None
    text: Text | None = None


class TokenizerParams(BaseModel):
    """`kind`, `chunk_length`, and at most one more key: the parameters of the kind, under its name
    (`fast: {vocab_size: 2048}`). The kinds are classes of the tokenization layer (tokenization/kinds/), which
    check the name and those parameters; here only their size is bounded."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    kind: str = Field(pattern=SLUG, max_length=64, description="a registered tokenizer kind: bin, fast, discrete, ...")
    chunk_length: int = Field(gt=0, le=1000, description="actions per chunk (one chunk: one frame interval or ~1 s)")

    @model_validator(mode="after")
    def _small_sections(self) -> TokenizerParams:
        if len(self.model_extra or {}) > 16 or _size(self.model_extra) > 1000:
            raise ValueError("more than 1000 values besides kind and chunk_length; a kind has a few parameters")
        return self

    @property
    def sections(self) -> dict[str, object]:
        """Every key besides kind and chunk_length, as written: the kind's parameters, or a mistake."""
        return dict(self.model_extra or {})


MAX_AGENTS = 8  # = the vocabulary's agent section (tokenization/vocabulary.py); a card may list 1..MAX_AGENTS


class Region(_Strict):
    """A part of the frame, as fractions of its width and height (0 = left/top edge, 1 = right/bottom edge)."""
    left: float = Field(ge=0, le=1)
    top: float = Field(ge=0, le=1)
    right: float = Field(ge=0, le=1)
    bottom: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _not_empty(self) -> Region:
        if self.right <= self.left or self.bottom <= self.top:
            raise ValueError("expected left < right and top < bottom")
        return self


class Agent(_Strict):
    """One agent of a scene with several: its name (the simulator's), its action fields exactly as a card's `action`,
    and optionally the part of the frame its actions move (evaluation's attribution: cooperative pong's paddle half)."""
    name: str = Field(pattern=SLUG, max_length=64)
    action: list[ActionField] = Field(min_length=1, max_length=MAX_ITEMS)
    region: Region | None = None


class CardHeader(_Strict):
    name: str = Field(pattern=SLUG, max_length=200)
    pretty_name: Name | None = None
    license: Name = Field(min_length=1)
    embodiment: str = Field(pattern=SLUG, max_length=200)
    source: Source
    control_frequency_hz: float = Field(gt=0, le=10000)
    cameras: list[Camera] = Field(default_factory=list, max_length=MAX_ITEMS)
    # The native action fields of the embodiment; a scene with several agents lists them per agent under `agents`
    # instead, and `action` then holds every agent's fields in agent order, each path as '<agent>/<path>'.
    action: list[ActionField] | None = Field(default=None, min_length=1, max_length=MAX_ITEMS)
    agents: list[Agent] | None = Field(default=None, min_length=1, max_length=MAX_AGENTS)
    proprio: list[ObservationField] = Field(default_factory=list, max_length=MAX_ITEMS)
    instruction: Instruction | None = None
    tokenizer: TokenizerParams
    action_space_version: int = Field(default=1, ge=1)
    # Hugging Face dataset-card keys, kept so cards render on the Hub.
    tags: list[Name] = Field(default_factory=list, max_length=MAX_ITEMS)
    task_categories: list[Name] = Field(default_factory=list, max_length=MAX_ITEMS)
    language: list[Name] = Field(default_factory=list, max_length=MAX_ITEMS)
    size_categories: list[Name] = Field(default_factory=list, max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _action_or_agents(self) -> CardHeader:
        if (self.action is None) == (self.agents is None):
            raise ValueError("expected exactly one of 'action' (one agent) and 'agents' (each agent's action fields)")
        if self.agents is not None:
            names = [a.name for a in self.agents]
            dup = next((n for n in names if names.count(n) > 1), None)
            if dup is not None:
                raise ValueError(f"agents: agent name '{dup}' is used twice")
            fields = [f.model_copy(update={"path": f"{a.name}/{f.path}"}) for a in self.agents for f in a.action]
            if len(fields) > MAX_ITEMS:
                raise ValueError(f"agents: {len(fields)} action fields in all, at most {MAX_ITEMS}")
            object.__setattr__(self, "action", fields)  # frozen: filled once, here
        return self

    @property
    def agent_names(self) -> tuple[str, ...]:
        """The agents in order: () for a card without `agents` (one agent, as every card before them)."""
        return tuple(a.name for a in self.agents) if self.agents else ()

    def field_location(self, i: int) -> str:
        """Where `action[i]` was written in the card: 'action[i]', or 'agents[a].action[j]'."""
        if not self.agents:
            return f"action[{i}]"
        for a, agent in enumerate(self.agents):
            if i < len(agent.action):
                return f"agents[{a}].action[{i}]"
            i -= len(agent.action)
        return f"action[{i}]"

    @property
    def frame_every(self) -> int:
        """Steps between the stored frames of the card's episodes: its source's `frame_every`, 1 for a source
        without one (every step has its frame)."""
        return int(getattr(self.source, "frame_every", 1))
