"""Controls from a card: held keys and gamepad values -> one native action per control step, for any embodiment.

Nothing here names an embodiment. Each unified slot of the card gets one control, chosen by the slot's kind,
mode and units (action_space.py):
- `axis`   a continuous delta or velocity slot, or a held device's absolute one centred on 0 (a wheel, a stick): two keys
           ramp it toward its low or high end while held; released, it returns to 0;
- `pedal`  a held device's absolute slot from 0 (throttle, brake, a trigger): one key ramps it up, released it returns to 0;
           a gripper (fraction open) is a pedal the other way round: open at rest, the key closes it;
- `target` any other absolute slot (a joint angle, an end-effector position): two keys move the target, which
           stays where it was left (its rest is the start: the last recorded action of the episode played from);
- `button` a binary slot: 1 while its key is held;
- `choice` a categorical slot: one key per class but the first (0: none, keep), that class while held.
Ranges are what the tokenizer was fitted on (its q01..q99 statistics), else the slot's nominal range, so a full
deflection is an action the model has seen. Ramps take RAMP_S seconds end to end at the card's control rate.

The unified values then go to native units through the card's mapping (`to_native`: a table picks its nearest
row, so Atari's d-pad buttons and fire become one of its 18 actions and highway's lane and speed choices one
of its meta-actions), and a chunk of native actions goes through `encode_native`, as the loader encodes
recorded data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from unified_action import action_space
from unified_action.action_space import SlotKind, SlotMode
from unified_action.cards import DataCard
from unified_action.errors import UnifiedActionError
from unified_action.tokenization.normalization import Stats

RAMP_S = 0.5  # seconds from rest to a full deflection while a key is held (returning to rest takes half that)
TARGET_S = 2.0  # seconds for a target control to cross its whole range
MAX_CHOICE_KEYS = 9  # classes of a categorical slot reachable by keys (Digit1..Digit9 at most)
DEADZONE = 0.15
# groups of devices a person holds, whose absolute slots rest centred (a wheel, a stick) or released (a pedal, a
# trigger); the absolute slots of other groups are positions (joints, end effectors), which stay where they were put
HELD_DEVICES = ("vehicle", "gamepad", "mouse", "keyboard")  # gamepad stick values below this are rest (sticks do not centre exactly)

# KeyboardEvent.code values, preferred per slot name suffix (the first free pair/key wins); see _PREFERRED
_POOL = tuple([f"Key{c}" for c in "QWERTYUIOPASDFGHJKLZXCVBNM"] + [f"Digit{i}" for i in range(10)]
              + ["BracketLeft", "BracketRight", "Semicolon", "Quote", "Comma", "Period", "Slash", "Minus", "Equal"])
_PREFERRED: dict[str, tuple[str, ...]] = {
    # vehicle
    "vehicle.steer": ("ArrowLeft", "ArrowRight"), "vehicle.steer_angle": ("ArrowRight", "ArrowLeft"),
    "vehicle.throttle": ("ArrowUp",), "vehicle.brake": ("ArrowDown",), "vehicle.accel": ("ArrowDown", "ArrowUp"),
    "vehicle.lane_change": ("ArrowLeft", "ArrowRight"), "vehicle.speed_command": ("ArrowUp", "ArrowDown"),
    # game controller
    "gamepad.dpad_up": ("ArrowUp",), "gamepad.dpad_down": ("ArrowDown",), "gamepad.dpad_left": ("ArrowLeft",),
    "gamepad.dpad_right": ("ArrowRight",), "gamepad.a": ("Space",), "gamepad.b": ("KeyB",), "gamepad.x": ("KeyX",),
    "gamepad.y": ("KeyY",), "gamepad.lb": ("KeyQ",), "gamepad.rb": ("KeyE",), "gamepad.start": ("Enter",),
    "gamepad.select": ("Backspace",), "gamepad.left_stick.x": ("KeyA", "KeyD"), "gamepad.left_stick.y": ("KeyS", "KeyW"),
    "gamepad.right_stick.x": ("KeyJ", "KeyL"), "gamepad.right_stick.y": ("KeyK", "KeyI"), "gamepad.lt": ("KeyZ",),
    "gamepad.rt": ("KeyC",),
    # an arm's end effector: arrows in the horizontal plane (x forward, y left), Q/E down/up, IJKL/UO rotation
    "eef_pos_delta.x": ("ArrowDown", "ArrowUp"), "eef_pos_delta.y": ("ArrowRight", "ArrowLeft"),
    "eef_pos_delta.z": ("KeyQ", "KeyE"),
    # an absolute position (a planar pusher's point on its screen, x right, y down): arrows as on the screen
    "eef_pos.x": ("ArrowLeft", "ArrowRight"), "eef_pos.y": ("ArrowUp", "ArrowDown"), "eef_pos.z": ("KeyQ", "KeyE"), "eef_rot_delta.x": ("KeyK", "KeyI"), "eef_rot_delta.y": ("KeyJ", "KeyL"),
    "eef_rot_delta.z": ("KeyU", "KeyO"), "gripper": ("Space",), "gripper_delta": ("KeyZ", "KeyX"),
    # a mobile base: WASD, yaw on Z/X
    "base.vel.x": ("KeyS", "KeyW"), "base.vel.y": ("KeyD", "KeyA"), "base.yaw_rate": ("KeyX", "KeyZ"),
    "base.pos_delta.x": ("KeyS", "KeyW"), "base.pos_delta.y": ("KeyD", "KeyA"), "base.yaw_delta": ("KeyX", "KeyZ"),
    "episode.terminate": ("Backspace",),
}
# joints j of the right arm: Digit(j+1) up, the key below it (QWERTY row) down; the left arm: the A and Z rows
_ROWS = {"right_arm": ("QWERTYUIOP", "1234567890"), "left_arm": ("ZXCVBNM", "ASDFGHJ")}
# the browser's standard gamepad layout (w3c gamepad "standard" mapping): sticks are axes 0-3 (y down), triggers
# buttons 6-7 (analog), the d-pad buttons 12-15
_PAD: dict[str, str] = {
    "gamepad.left_stick.x": "axis:0", "gamepad.left_stick.y": "-axis:1", "gamepad.right_stick.x": "axis:2",
    "gamepad.right_stick.y": "-axis:3", "gamepad.lt": "button:6", "gamepad.rt": "button:7", "gamepad.a": "button:0",
    "gamepad.b": "button:1", "gamepad.x": "button:2", "gamepad.y": "button:3", "gamepad.lb": "button:4",
    "gamepad.rb": "button:5", "gamepad.select": "button:8", "gamepad.start": "button:9", "gamepad.l3": "button:10",
    "gamepad.r3": "button:11", "gamepad.dpad_up": "button:12", "gamepad.dpad_down": "button:13",
    "gamepad.dpad_left": "button:14", "gamepad.dpad_right": "button:15",
    "vehicle.steer": "axis:0", "vehicle.throttle": "button:7", "vehicle.brake": "button:6", "vehicle.accel": "-axis:1",
    "vehicle.steer_angle": "-axis:0", "vehicle.lane_change": "button:14,15", "vehicle.speed_command": "button:12,13",
    "eef_pos_delta.x": "-axis:1", "eef_pos_delta.y": "-axis:0", "eef_pos_delta.z": "-axis:3",
    "eef_rot_delta.z": "-axis:2", "gripper": "button:7",
    "base.vel.x": "-axis:1", "base.vel.y": "-axis:0", "base.yaw_rate": "-axis:2",
    "base.pos_delta.x": "-axis:1", "base.pos_delta.y": "-axis:0", "base.yaw_delta": "-axis:2",
}


@dataclass(frozen=True)
class Control:
    """One slot's control. Values in unified units; `keys` are KeyboardEvent.code names: (decrease, increase) for
    axis and target, (press,) for pedal and button, one per class 1.. for choice."""

    slot: str
    index: int  # the slot's position in the card's unified vector
    kind: str  # axis | pedal | target | button | choice
    keys: tuple[str, ...]
    rest: float  # the value with nothing held (a target's start)
    low: float
    high: float
    pressed: float = 1.0  # pedal: the value a held key ramps to
    labels: tuple[str, ...] = ()  # choice: the classes' names
    pad: str | None = None  # gamepad source: 'axis:i', '-axis:i' (inverted), 'button:i' or 'button:i,j' (choice)

    def to_json(self) -> dict:
        return asdict(self)


def _suffix(name: str) -> str:
    """'right_arm.eef_pos_delta.x' -> 'eef_pos_delta.x' (the part of a slot's name every arm shares)."""
    group, _, rest = name.partition(".")
    return rest if group.endswith(("_arm", "_hand")) else name


def _kind(slot: action_space.Slot) -> str:
    if slot.kind is SlotKind.BINARY:
        return "button"
    if slot.kind is SlotKind.CATEGORICAL:
        return "choice"
    if slot.mode in (SlotMode.DELTA, SlotMode.VELOCITY):
        return "axis"
    if slot.units == "fraction_open":
        return "pedal"  # a gripper: open at rest
    if slot.group in HELD_DEVICES and slot.low == 0:
        return "pedal"
    if slot.group in HELD_DEVICES and slot.low == -slot.high:
        return "axis"
    return "target"  # a position: it stays where it was put


def _code(c: str) -> str:
    """A key's character -> its KeyboardEvent.code."""
    return f"Digit{c}" if c.isdigit() else f"Key{c}"


def _preferred_keys(slot: action_space.Slot, kind: str) -> tuple[str, ...]:
    if slot.name in _PREFERRED:
        return _PREFERRED[slot.name]
    suffix = _suffix(slot.name)
    if suffix in _PREFERRED:
        return _PREFERRED[suffix]
    group, _, rest = slot.name.partition(".")
    if group in _ROWS and rest.startswith("joint_"):
        j = int(rest.rsplit(".", 1)[1])
        down, up = _ROWS[group]
        if j < len(down):
            return _code(down[j]), _code(up[j])
    return ()


class Controls:
    """The controls of one card: `step(held, pad)` advances them one control step and returns the unified action;
    `chunk(held, pad)` the native actions of one frame's chunk; `reset()` back to rest."""

    def __init__(self, card: DataCard, stats: Stats | None = None, start_native: np.ndarray | None = None,
                 chunk_length: int | None = None):
        self.card, self.mapping = card, card.mapping
        if card.mapping.agents:  # one keyboard, one set of keys per slot: whose d-pad a key presses is not said yet
            raise UnifiedActionError(f"controls: card '{card.name}' has {len(card.mapping.agents)} agents "
                                     f"({', '.join(card.mapping.agents)}); uact play drives embodiments of one agent")
        self.hz = float(card.header.control_frequency_hz)
        self.chunk_length = int(chunk_length or card.header.tokenizer.chunk_length)
        version = card.header.action_space_version
        if stats is not None and tuple(stats.slots) != tuple(self.mapping.slot_names):
            raise UnifiedActionError(f"controls: stats of slots {list(stats.slots)[:3]}..., the card '{card.name}' maps "
                                     f"{self.mapping.slot_names[:3]}...: statistics of another tokenizer")
        start = None
        if start_native is not None:
            start_native = np.asarray(start_native, dtype=np.float64).reshape(-1)
            if start_native.shape != (self.mapping.native_dim,) or not np.isfinite(start_native).all():
                raise UnifiedActionError(f"controls: start_native: expected {self.mapping.native_dim} finite native "
                                         f"values (card '{card.name}'), got shape {list(start_native.shape)}")
            start = self.mapping.to_unified(start_native)[0]
        taken: set[str] = set()
        controls = []
        for i, slot in enumerate(self.mapping.slots):
            slot = action_space.slot(slot.name, version)
            kind = _kind(slot)
            low, high = slot.low, slot.high
            if kind not in ("button", "choice") and stats is not None and stats.q99[i] - stats.q01[i] > 1e-8:
                low, high = float(stats.q01[i]), float(stats.q99[i])  # what the tokenizer was fitted on
            rest, pressed = 0.0, 1.0
            if kind == "pedal":
                opens = slot.units == "fraction_open"  # a gripper rests open; its key closes it
                rest, pressed = (slot.high, slot.low) if opens else (slot.low, high)
                low, high = min(low, rest, pressed), max(high, rest, pressed)
            elif kind == "axis":
                low, high = min(low, 0.0), max(high, 0.0)  # rest (0) is always inside the range
            elif kind == "target":
                rest = float(start[i]) if start is not None else (low + high) / 2
                low, high = min(low, rest), max(high, rest)
            n_keys = {"axis": 2, "target": 2, "pedal": 1, "button": 1}.get(kind, min(slot.num_classes - 1, MAX_CHOICE_KEYS))
            keys = self._keys(slot, kind, n_keys, taken)
            pad = _PAD.get(slot.name) or _PAD.get(_suffix(slot.name))
            labels = slot.classes if kind == "choice" else ()
            controls.append(Control(slot.name, i, kind, keys, float(rest), float(low), float(high), float(pressed),
                                    tuple(labels), pad))
        self.controls: tuple[Control, ...] = tuple(controls)
        self.values = self.rest()

    @staticmethod
    def _keys(slot, kind: str, n: int, taken: set[str]) -> tuple[str, ...]:
        """The slot's preferred keys when all are free (two slots of one card never share a key), else free keys of
        the pool; a choice takes Digit keys first (class k on Digit k)."""
        want = _preferred_keys(slot, kind)
        if kind == "choice" and len(want) != n:
            want = tuple(f"Digit{k}" for k in range(1, n + 1))
        if len(want) != n or taken & set(want):
            free = [k for k in _POOL if k not in taken]
            if len(free) < n:
                raise UnifiedActionError(f"controls: slot '{slot.name}': no free keys left for its control")
            want = tuple(free[:n])
        taken.update(want)
        return want

    # ------------------------------------------------------------------------------------------------ state
    def rest(self) -> np.ndarray:
        """The unified action with nothing held."""
        out = np.zeros(self.mapping.dim)
        for c in self.controls:
            out[c.index] = c.rest
        return out

    def reset(self, start_native: np.ndarray | None = None) -> None:
        """Back to rest; targets from `start_native` (a native action) when given."""
        if start_native is not None:
            start = self.mapping.to_unified(np.asarray(start_native, dtype=np.float64).reshape(-1))[0]
            self.controls = tuple(_with_rest(c, float(start[c.index])) if c.kind == "target" else c for c in self.controls)
        self.values = self.rest()

    def neutral_native(self) -> np.ndarray:
        """The native action with nothing held: [native_dim]."""
        return self.mapping.to_native(self.rest())

    def step(self, held=(), pad: dict | None = None) -> np.ndarray:
        """One control step with the keys `held` (KeyboardEvent.code names) and the gamepad `pad` ({'axes': [...],
        'buttons': [...]}, a pad's values take over from the keys of a control they move) -> unified action [dim]."""
        held = set(held)
        axes = list((pad or {}).get("axes") or [])
        buttons = list((pad or {}).get("buttons") or [])
        v = self.values.copy()
        for c in self.controls:
            v[c.index] = self._advance(c, float(v[c.index]), held, axes, buttons)
        self.values = v
        return v.copy()

    def chunk(self, held=(), pad: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One frame's chunk under the same input: (native [chunk_length, native_dim], unified [chunk_length, dim])."""
        unified = np.stack([self.step(held, pad) for _ in range(self.chunk_length)])
        return self.mapping.to_native(unified), unified

    def _advance(self, c: Control, value: float, held: set[str], axes: list, buttons: list) -> float:
        span = c.high - c.low
        ramp = span / max(1.0, RAMP_S * self.hz)
        padv = _pad_value(c.pad, axes, buttons)
        if c.kind == "button":
            return 1.0 if c.keys[0] in held or (padv is not None and padv > 0.5) else 0.0
        if c.kind == "choice":
            if padv is not None and padv != 0:
                return float(padv)
            return float(next((k + 1 for k, key in enumerate(c.keys) if key in held), 0))
        if c.kind == "target":
            step = span / max(1.0, TARGET_S * self.hz)
            d = (c.keys[1] in held) - (c.keys[0] in held)
            if padv is not None and abs(padv) > DEADZONE:
                d = padv
            return float(np.clip(value + d * step, c.low, c.high))
        if c.kind == "pedal":
            if padv is not None and padv > 0.02:  # an analog trigger sets the pedal directly
                return c.rest + padv * (c.pressed - c.rest)
            goal = c.pressed if c.keys[0] in held else c.rest
        else:  # axis
            if padv is not None and abs(padv) > DEADZONE:
                return c.rest + padv * ((c.high - c.rest) if padv > 0 else (c.rest - c.low))
            d = (c.keys[1] in held) - (c.keys[0] in held)
            goal = c.high if d > 0 else c.low if d < 0 else c.rest
        rate = ramp if goal != c.rest else 2 * ramp  # back to rest twice as fast: a released key lets go
        return value + float(np.clip(goal - value, -rate, rate))

    def describe(self) -> list[dict]:
        """The controls as JSON for the page."""
        return [c.to_json() for c in self.controls]


def _with_rest(c: Control, rest: float) -> Control:
    return Control(c.slot, c.index, c.kind, c.keys, rest, min(c.low, rest), max(c.high, rest), c.pressed, c.labels, c.pad)


def _pad_value(spec: str | None, axes: list, buttons: list) -> float | None:
    """A gamepad source's value: an axis in [-1, 1] (sign flipped by '-'), a button's value in [0, 1], or for
    'button:i,j' the choice 1 or 2 when button i or j is pressed (0 none); None when the pad lacks it."""
    if spec is None or (not axes and not buttons):
        return None
    sign = -1.0 if spec.startswith("-") else 1.0
    what, _, idx = spec.lstrip("-").partition(":")
    try:
        ids = [int(i) for i in idx.split(",")]
        if what == "axis":
            return sign * float(axes[ids[0]])
        vals = [float(buttons[i]) for i in ids]
    except (IndexError, ValueError, TypeError):
        return None
    if len(vals) == 1:
        return vals[0]
    return float(next((k + 1 for k, b in enumerate(vals) if b > 0.5), 0))
