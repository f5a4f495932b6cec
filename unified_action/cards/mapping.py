"""Native actions <-> unified slot values, compiled from a validated card.

The native action of a step is flattened in card order: each action field contributes prod(shape) values
(a scalar field contributes one). A field maps as a whole or in parts (runs of its flattened values, each with
its own slots and transform); either way the mapping holds one `FieldMap` per part. The unified vector of an embodiment holds its slots sorted by slot id,
so two embodiments that share slots also share their order. A scene with several agents concatenates its agents'
vectors in agent order (each sorted by slot id, so one slot appears once per agent), and its native vector their
native fields likewise; `agent_dims` says how many unified values each agent has.

All conversions are vectorised over any leading batch/time dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod

import numpy as np
from scipy.spatial.transform import Rotation

from unified_action import action_space
from unified_action.action_space import Slot, SlotKind
from unified_action.cards.schema import ActionField, ObservationField


def per_dim(value, n: int) -> np.ndarray:
    """A scalar or a length-n list as a float64 array of length n (lengths are checked by the card)."""
    arr = np.asarray(value, dtype=np.float64)
    return np.broadcast_to(arr, (n,)).copy() if arr.ndim == 0 else arr


def field_size(field: ActionField | ObservationField) -> int:
    """Values in one step of a field: prod(shape), one for a scalar (proprio fields too)."""
    return prod(field.shape) if field.shape else 1


@dataclass(frozen=True)
class FieldMap:
    """One part of a native field (a field mapped as a whole is one part): where it sits, where it goes."""

    path: str
    native_start: int  # in the flattened native vector of a step, not in the field
    native_size: int
    transform: str  # identity | affine | rpy_to_rotvec | table
    out: np.ndarray  # index of each produced slot in the unified vector
    scale: np.ndarray | None = None
    offset: np.ndarray | None = None
    rows: np.ndarray | None = None  # [n_values, n_slots] for tables
    onehot: bool = False
    part: int | None = None  # index into the field's `parts`, None for a field mapped as a whole

    @property
    def native(self) -> slice:
        return slice(self.native_start, self.native_start + self.native_size)


@dataclass(frozen=True)
class ActionMapping:
    fields: tuple[FieldMap, ...]
    slots: tuple[Slot, ...]  # the embodiment's slots, sorted by id
    native_dim: int
    native_low: np.ndarray  # the card's declared native range (nan where none was declared)
    native_high: np.ndarray
    agents: tuple[str, ...] = ()  # a scene's agents in order; () for one agent
    agent_dims: tuple[int, ...] = ()  # unified values of each agent (they follow one another in `slots`)
    agent_native_dims: tuple[int, ...] = ()  # native values of each agent, likewise

    def agent_columns(self, a: int) -> slice:
        """Agent a's values in the unified vector (all of it for a card of one agent)."""
        if not self.agents:
            return slice(0, self.dim)
        start = sum(self.agent_dims[:a])
        return slice(start, start + self.agent_dims[a])

    def agent_native_columns(self, a: int) -> slice:
        """Agent a's values in the native vector (all of it for a card of one agent)."""
        if not self.agents:
            return slice(0, self.native_dim)
        start = sum(self.agent_native_dims[:a])
        return slice(start, start + self.agent_native_dims[a])

    @property
    def dim(self) -> int:
        return len(self.slots)

    @property
    def slot_names(self) -> list[str]:
        return [s.name for s in self.slots]

    @property
    def kinds(self) -> list[SlotKind]:
        return [s.kind for s in self.slots]

    def native_targets(self) -> list[tuple[str, str]]:
        """(slot, transform) of every native dimension; a table or rpy_to_rotvec value feeds all its part's slots,
        named together."""
        out = [("", "")] * self.native_dim
        for f in self.fields:
            names = [self.slots[i].name for i in f.out]
            together = f.transform in ("table", "rpy_to_rotvec")
            for k in range(f.native_size):
                out[f.native_start + k] = (", ".join(names) if together else names[k], f.transform)
        return out

    def to_unified(self, native: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[..., native_dim] -> ([..., dim] float64, [...] count of table inputs outside the table per step).

        An index outside the table (an Atari action 18, say) is clipped into it; the count says it happened."""
        native = np.asarray(native)
        if native.shape[-1] != self.native_dim:
            raise ValueError(f"expected native actions with last dimension {self.native_dim}, got shape {native.shape}")
        out = np.zeros(native.shape[:-1] + (self.dim,), dtype=np.float64)
        bad = np.zeros(native.shape[:-1], dtype=np.int64)
        for f in self.fields:
            x = native[..., f.native].astype(np.float64)
            if f.transform == "identity":
                out[..., f.out] = x
            elif f.transform == "affine":
                out[..., f.out] = x * f.scale + f.offset
            elif f.transform == "rpy_to_rotvec":
                flat = x.reshape(-1, 3)
                out[..., f.out] = Rotation.from_euler("xyz", flat).as_rotvec().reshape(x.shape)
            else:  # table
                idx = np.argmax(x, axis=-1) if f.onehot else np.rint(x[..., 0]).astype(np.int64)
                n = len(f.rows)
                outside = (idx < 0) | (idx >= n)
                bad += outside
                out[..., f.out] = f.rows[np.clip(idx, 0, n - 1)]
        return out, bad

    def to_native(self, unified: np.ndarray) -> np.ndarray:
        """[..., dim] -> [..., native_dim]: the inverse of to_unified (tables pick the nearest row)."""
        unified = np.asarray(unified, dtype=np.float64)
        out = np.zeros(unified.shape[:-1] + (self.native_dim,), dtype=np.float64)
        for f in self.fields:
            u = unified[..., f.out]
            if f.transform == "identity":
                out[..., f.native] = u
            elif f.transform == "affine":
                out[..., f.native] = (u - f.offset) / f.scale
            elif f.transform == "rpy_to_rotvec":
                flat = u.reshape(-1, 3)
                out[..., f.native] = Rotation.from_rotvec(flat).as_euler("xyz").reshape(u.shape)
            else:
                idx = np.abs(u[..., None, :] - f.rows).sum(-1).argmin(-1)  # first nearest row on ties
                out[..., f.native] = np.eye(len(f.rows))[idx] if f.onehot else idx[..., None]
        return out


def compile_mapping(fields: list[ActionField], version: int, agents: tuple[tuple[str, int], ...] = ()) -> ActionMapping:
    """Build the mapping of a card whose fields `card.check_semantics` has accepted; `agents`: (name, number of
    fields) of each agent of a scene, whose fields follow one another in `fields`."""
    if agents:
        starts = np.cumsum([0] + [n for _, n in agents])
        each = [compile_mapping(fields[a:b], version) for a, b in zip(starts, starts[1:])]
        maps, native_at, out_at = [], 0, 0
        for m in each:
            maps += [replace(f, native_start=f.native_start + native_at, out=f.out + out_at) for f in m.fields]
            native_at, out_at = native_at + m.native_dim, out_at + m.dim
        return ActionMapping(tuple(maps), tuple(s for m in each for s in m.slots), native_at,
                             np.concatenate([m.native_low for m in each]), np.concatenate([m.native_high for m in each]),
                             tuple(name for name, _ in agents), tuple(m.dim for m in each), tuple(m.native_dim for m in each))
    parts = [f.as_parts() for f in fields]
    used = sorted({action_space.slot(name, version).id for ps in parts for p in ps for name in p.slots})
    table = action_space.slots(version)
    position = {slot_id: i for i, slot_id in enumerate(used)}
    maps, lows, highs = [], [], []
    start = 0  # of the current field in the flattened native vector
    for f, ps in zip(fields, parts):
        low, high = np.full(f.size, np.nan), np.full(f.size, np.nan)
        for j, p in enumerate(ps):
            out = np.array([position[action_space.slot(name, version).id] for name in p.slots])
            t = p.transform
            kw: dict = {}
            if t.type == "affine":
                kw = dict(scale=per_dim(t.scale, len(p.slots)), offset=per_dim(t.offset, len(p.slots)))
            elif t.type == "table":
                kw = dict(rows=np.asarray(t.rows, dtype=np.float64), onehot=t.input == "onehot")
            maps.append(FieldMap(f.path, start + p.start, p.size, t.type, out, part=j if f.parts is not None else None, **kw))
            if p.range is not None:
                low[p.start: p.stop], high[p.start: p.stop] = per_dim(p.range.low, p.size), per_dim(p.range.high, p.size)
        lows.append(low)
        highs.append(high)
        start += f.size
    return ActionMapping(tuple(maps), tuple(table[i] for i in used), start, np.concatenate(lows), np.concatenate(highs))
