"""One episode in memory, the unit every source yields and every sink writes.

Sources (a simulator recording, an RLDS build, a LeRobot dataset) all produce `Episode`s keyed by the
data card's own names: camera names from `card.cameras`, native action field paths from `card.action`,
proprio paths from `card.proprio`. Sinks (webdataset shards, an RLDS build) never need to know where an
episode came from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from unified_action.cards import DataCard
from unified_action.cards.mapping import field_size
from unified_action.cards.schema import MAX_FRAME_EVERY
from unified_action.errors import DataError

ARRAY_NAME = r"^[a-z0-9][a-z0-9_\-]{0,63}$"  # a per-step array's name: one segment of a member name
RESERVED_NAMES = ("meta", "action", "proprio", "reward", "discount", "flags")


def frame_count(steps: int, every: int) -> int:
    """Frames an episode of `steps` steps holds with one frame every `every` steps: steps 0, every, 2*every, ..."""
    return -(-steps // every)


@dataclass
class Episode:
    card: str  # the data card's name
    index: int  # position of the episode in its source (stable: shards and resumes refer to it)
    frames: dict[str, np.ndarray]  # camera name -> uint8 [ceil(T / frame_every), H, W, 3]: entry i is step i * frame_every
    actions: dict[str, np.ndarray]  # card action field path -> [T, *field.shape], native units and dtype
    reward: np.ndarray  # float32 [T]
    is_first: np.ndarray  # bool [T]
    is_last: np.ndarray  # bool [T]
    is_terminal: np.ndarray  # bool [T]
    instruction: str = ""
    proprio: dict[str, np.ndarray] = field(default_factory=dict)  # card proprio path -> [T, *shape]
    discount: np.ndarray | None = None  # float32 [T]; None means all ones
    source: str = ""  # where it came from, for people: 'ALE/Pong-v5 seed 3', an RLDS file path...
    # other per-step arrays, name -> [T, ...] of any numeric dtype (e.g. a frozen autoencoder's latents), stored
    # losslessly in blocks beside the frames (shards.py, layout 2)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    # steps between stored frames: the loader shows frames only a frame stride (a multiple of this) apart, from
    # clip starts that are multiples of it, so a simulator need not render the steps in between (sims.py)
    frame_every: int = 1

    def __len__(self) -> int:
        return len(self.reward)

    def native_actions(self, card: DataCard) -> np.ndarray:
        """[T, native_dim] float64, fields flattened in card order (the layout ActionMapping expects)."""
        parts = [np.asarray(self.actions[f.path]).reshape(len(self), -1).astype(np.float64) for f in card.header.action]
        return np.concatenate(parts, axis=1)

    def proprio_vector(self, card: DataCard) -> np.ndarray | None:
        """[T, P] float32, proprio fields flattened in card order, or None when the card declares none."""
        if not card.header.proprio:
            return None
        return np.concatenate([np.asarray(self.proprio[p.path]).reshape(len(self), -1).astype(np.float32)
                               for p in card.header.proprio], axis=1)

    def check(self, card: DataCard, where: str = "") -> None:
        """Raise DataError (naming `where`, the field and what was expected) unless this episode fits the card."""
        where = where or f"{card.name} episode {self.index}"
        T = len(self)
        if T == 0:
            raise DataError(f"{where}: episode has no steps")
        for name, arr in (("reward", self.reward), ("is_first", self.is_first), ("is_last", self.is_last),
                          ("is_terminal", self.is_terminal)):
            if np.shape(arr) != (T,):
                raise DataError(f"{where}: {name}: shape {list(np.shape(arr))}, expected [{T}]")
        k = self.frame_every
        if not (isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= MAX_FRAME_EVERY):
            raise DataError(f"{where}: frame_every: {str(k)[:20]}, expected an integer in 1..{MAX_FRAME_EVERY}")
        n = frame_count(T, k)
        for cam in card.header.cameras:
            if cam.name not in self.frames:
                raise DataError(f"{where}: frames: camera '{cam.name}' is missing (have {sorted(self.frames)})")
        for name, fr in self.frames.items():
            if fr.dtype != np.uint8 or fr.ndim != 4 or fr.shape[0] != n or fr.shape[-1] != 3:
                every = "" if k == 1 else f" (one frame every {k} steps of {T}: frame_every {k})"
                raise DataError(f"{where}: frames.{name}: {fr.dtype} {list(fr.shape)}, expected uint8 [{n}, H, W, 3]{every}")
        for name, a in self.arrays.items():
            if not re.match(ARRAY_NAME, name) or name in self.frames or name in RESERVED_NAMES:
                raise DataError(f"{where}: arrays: name '{name[:60]}' must match {ARRAY_NAME}, and be neither a camera "
                                f"nor one of {', '.join(RESERVED_NAMES)}")
            if not isinstance(a, np.ndarray) or a.dtype.kind not in "biuf" or a.ndim < 1 or a.shape[0] != T:
                raise DataError(f"{where}: arrays.{name}: {getattr(a, 'dtype', type(a).__name__)} "
                                f"{list(np.shape(a))}, expected a numeric array [{T}, ...]")
        for f in card.header.action:
            if f.path not in self.actions:
                raise DataError(f"{where}: action '{f.path}' is missing (have {sorted(self.actions)})")
            a = np.asarray(self.actions[f.path])
            if a.shape[:1] != (T,) or int(np.prod(a.shape[1:], dtype=np.int64)) != field_size(f):
                raise DataError(f"{where}: action '{f.path}': shape {list(a.shape)}, expected [{T}, {', '.join(map(str, f.shape))}]")
            if a.dtype.kind not in "biuf":
                raise DataError(f"{where}: action '{f.path}': dtype {a.dtype}, expected {f.dtype}")
        for p in card.header.proprio:
            if p.path in self.proprio and np.asarray(self.proprio[p.path]).shape[:1] != (T,):
                raise DataError(f"{where}: proprio '{p.path}': shape {list(np.shape(self.proprio[p.path]))}, expected [{T}, ...]")
