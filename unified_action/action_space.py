"""The unified action space: one versioned, append-only table of NAMED slots.

Every embodiment (robot arm, bimanual robot, dexterous hand, mobile base, vehicle, game controller,
mouse and keyboard) writes its actions into the slots it has. A data card maps each native action field
onto slots; the tokenizers and the world model only ever see slot values.

Read top to bottom: the slot record, the table of version 1 (built group by group), and the lookups.

Rules that keep checkpoints and tokenizers valid forever:
- The table is APPEND-ONLY. A later version adds slots at the end; an existing slot never changes its id,
  name, kind, units or mode. `tests/test_action_space.py` holds the frozen v1 table and fails otherwise.
- Every slot states its `mode`: `absolute` (a target position or state), `delta` (a change relative to the
  current state, applied once per control step) or `velocity` (a rate). A delta action goes in a `*_delta`
  slot, never in the absolute one: this answers the question RDT-1B users keep asking (RDT#14).
- Dexterous hands have their own groups of 24 joints, so a hand never overflows into spare slots (RDT#122).
- A single-arm robot uses the `right_arm` slots (RDT-1B's convention); a bimanual robot uses both.

Representations (documented here once, referred to by the slots' descriptions):
- Joint angles in rad, velocities in rad/s; positions in metres in the robot's base frame.
- `eef_rot6d`: absolute end-effector orientation as the first two COLUMNS of the rotation matrix,
  (r11, r21, r31, r12, r22, r32): continuous, no wrap-around (Zhou et al. 2019).
- `eef_rot_delta`: a rotation vector (axis * angle, rad) applied in the base frame. For the small per-step
  deltas of Open-X data it equals roll/pitch/yaw increments to first order; the card transform
  `rpy_to_rotvec` converts exactly.
- `gripper`: opening as a fraction, 0 = closed, 1 = fully open. Cards map effort or closedness commands
  onto it with an affine transform.
- Game controller: the Xbox layout. Sticks in [-1, 1] (x right, y up), triggers in [0, 1], buttons 0/1.
  Atari's 18 actions are d-pad combinations with or without `gamepad.a` (fire).
- Keyboard: up to four simultaneously held keys, each a categorical USB HID usage id (0 = no key).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import cache

from unified_action.errors import did_you_mean


class SlotKind(str, Enum):
    CONTINUOUS = "continuous"
    BINARY = "binary"
    CATEGORICAL = "categorical"


class SlotMode(str, Enum):
    ABSOLUTE = "absolute"
    DELTA = "delta"
    VELOCITY = "velocity"


@dataclass(frozen=True)
class Slot:
    id: int
    name: str
    group: str
    kind: SlotKind
    units: str
    mode: SlotMode
    description: str
    low: float  # nominal range: documentation and a default, never a hard limit for continuous slots
    high: float
    classes: tuple[str, ...] = ()  # categorical only: the meaning of each class index

    @property
    def num_classes(self) -> int:
        if self.kind is SlotKind.CATEGORICAL:
            return len(self.classes)
        return 2 if self.kind is SlotKind.BINARY else 0


# ---------------------------------------------------------------------------------------------------
# Version 1. Each helper appends (name, group, kind, units, mode, description, low, high, classes).
# ---------------------------------------------------------------------------------------------------

_C, _B, _K = SlotKind.CONTINUOUS, SlotKind.BINARY, SlotKind.CATEGORICAL
_ABS, _DEL, _VEL = SlotMode.ABSOLUTE, SlotMode.DELTA, SlotMode.VELOCITY
ARM_JOINTS = 10  # room for 7-DoF arms plus redundancy (RDT-1B also reserves 10)
HAND_JOINTS = 24  # Shadow hand: 24 joints; Allegro and LEAP: 16; Inspire: 6-12
KEYBOARD_KEYS = 4
HID_USAGE_IDS = 256
_XYZ = ("x", "y", "z")


def _arm(side: str) -> list[tuple]:
    g = f"{side}_arm"
    rows: list[tuple] = []
    for j in range(ARM_JOINTS):
        rows.append((f"{g}.joint_pos.{j}", g, _C, "rad", _ABS, f"joint {j} position", -3.1416, 3.1416))
    for j in range(ARM_JOINTS):
        rows.append((f"{g}.joint_pos_delta.{j}", g, _C, "rad", _DEL, f"joint {j} position change per step", -0.5, 0.5))
    for j in range(ARM_JOINTS):
        rows.append((f"{g}.joint_vel.{j}", g, _C, "rad/s", _VEL, f"joint {j} velocity", -3.1416, 3.1416))
    rows.append((f"{g}.gripper", g, _C, "fraction_open", _ABS, "gripper opening, 0 closed, 1 fully open", 0.0, 1.0))
    rows.append((f"{g}.gripper_delta", g, _C, "fraction_open", _DEL, "gripper opening change per step", -1.0, 1.0))
    rows.append((f"{g}.gripper_vel", g, _C, "fraction_open/s", _VEL, "gripper opening rate", -5.0, 5.0))
    for a in _XYZ:
        rows.append((f"{g}.eef_pos.{a}", g, _C, "m", _ABS, f"end-effector position {a}, base frame", -1.5, 1.5))
    for k in range(6):
        rows.append((f"{g}.eef_rot6d.{k}", g, _C, "unitless", _ABS, f"end-effector rotation, 6D element {k} (columns 1-2 of R)", -1.0, 1.0))
    for a in _XYZ:
        rows.append((f"{g}.eef_pos_delta.{a}", g, _C, "m", _DEL, f"end-effector position change {a} per step", -0.1, 0.1))
    for a in _XYZ:
        rows.append((f"{g}.eef_rot_delta.{a}", g, _C, "rad", _DEL, f"end-effector rotation vector {a} per step", -0.5, 0.5))
    for a in _XYZ:
        rows.append((f"{g}.eef_lin_vel.{a}", g, _C, "m/s", _VEL, f"end-effector linear velocity {a}", -1.0, 1.0))
    for a in _XYZ:
        rows.append((f"{g}.eef_ang_vel.{a}", g, _C, "rad/s", _VEL, f"end-effector angular velocity {a}", -3.1416, 3.1416))
    return rows


def _hand(side: str) -> list[tuple]:
    g = f"{side}_hand"
    rows = [(f"{g}.joint_pos.{j}", g, _C, "rad", _ABS, f"finger joint {j} position", -1.6, 1.6) for j in range(HAND_JOINTS)]
    rows += [(f"{g}.joint_pos_delta.{j}", g, _C, "rad", _DEL, f"finger joint {j} change per step", -0.5, 0.5) for j in range(HAND_JOINTS)]
    return rows


def _base() -> list[tuple]:
    g = "base"
    return [
        ("base.vel.x", g, _C, "m/s", _VEL, "forward velocity, base frame", -2.0, 2.0),
        ("base.vel.y", g, _C, "m/s", _VEL, "leftward velocity, base frame", -2.0, 2.0),
        ("base.yaw_rate", g, _C, "rad/s", _VEL, "yaw rate, counter-clockwise positive", -3.1416, 3.1416),
        ("base.pos_delta.x", g, _C, "m", _DEL, "forward displacement per step", -0.5, 0.5),
        ("base.pos_delta.y", g, _C, "m", _DEL, "leftward displacement per step", -0.5, 0.5),
        ("base.yaw_delta", g, _C, "rad", _DEL, "yaw change per step, counter-clockwise positive", -3.1416, 3.1416),
    ]


def _vehicle() -> list[tuple]:
    g = "vehicle"
    return [
        ("vehicle.steer", g, _C, "normalized", _ABS, "steering command, -1 full left, +1 full right", -1.0, 1.0),
        ("vehicle.throttle", g, _C, "fraction", _ABS, "throttle pedal, 0 released, 1 full", 0.0, 1.0),
        ("vehicle.brake", g, _C, "fraction", _ABS, "brake pedal, 0 released, 1 full", 0.0, 1.0),
        ("vehicle.steer_angle", g, _C, "rad", _ABS, "front-wheel angle, positive to the left", -0.8, 0.8),
        ("vehicle.accel", g, _C, "m/s^2", _ABS, "longitudinal acceleration command", -10.0, 10.0),
        ("vehicle.lane_change", g, _K, "class", _ABS, "lane-change request", 0, 2, ("keep", "left", "right")),
        ("vehicle.speed_command", g, _K, "class", _ABS, "target-speed request", 0, 2, ("keep", "faster", "slower")),
    ]


def _gamepad() -> list[tuple]:
    g = "gamepad"
    buttons = ["dpad_up", "dpad_down", "dpad_left", "dpad_right", "a", "b", "x", "y",
               "lb", "rb", "start", "select", "l3", "r3"]
    rows = [(f"gamepad.{b}", g, _B, "pressed", _ABS, f"button {b}, 1 pressed", 0, 1) for b in buttons]
    for stick in ("left_stick", "right_stick"):
        rows.append((f"gamepad.{stick}.x", g, _C, "normalized", _ABS, f"{stick} x, +1 right", -1.0, 1.0))
        rows.append((f"gamepad.{stick}.y", g, _C, "normalized", _ABS, f"{stick} y, +1 up", -1.0, 1.0))
    rows.append(("gamepad.lt", g, _C, "fraction", _ABS, "left trigger, 0 released, 1 full", 0.0, 1.0))
    rows.append(("gamepad.rt", g, _C, "fraction", _ABS, "right trigger, 0 released, 1 full", 0.0, 1.0))
    return rows


def _mouse_keyboard() -> list[tuple]:
    rows = [
        ("mouse.dx", "mouse", _C, "px", _DEL, "pointer motion right per step", -100.0, 100.0),
        ("mouse.dy", "mouse", _C, "px", _DEL, "pointer motion down per step", -100.0, 100.0),
        ("mouse.scroll", "mouse", _C, "notch", _DEL, "wheel notches per step, + away from user", -5.0, 5.0),
        ("mouse.left", "mouse", _B, "pressed", _ABS, "left button, 1 pressed", 0, 1),
        ("mouse.right", "mouse", _B, "pressed", _ABS, "right button, 1 pressed", 0, 1),
        ("mouse.middle", "mouse", _B, "pressed", _ABS, "middle button, 1 pressed", 0, 1),
    ]
    hid = tuple(["none"] + [f"hid_{i:#04x}" for i in range(1, HID_USAGE_IDS)])
    for k in range(KEYBOARD_KEYS):
        rows.append((f"keyboard.key.{k}", "keyboard", _K, "hid_usage", _ABS, f"held key {k} (USB HID usage id, 0 none)", 0, HID_USAGE_IDS - 1, hid))
    return rows


def _episode() -> list[tuple]:
    return [("episode.terminate", "episode", _B, "flag", _ABS, "policy asks to end the episode", 0, 1)]


def _build_v1() -> list[tuple]:
    return (_arm("right") + _arm("left") + _hand("right") + _hand("left") + _base() + _vehicle()
            + _gamepad() + _mouse_keyboard() + _episode())


# Version -> number of slots in it. Appending a version: add rows after the v1 rows and a new entry here.
_ROWS = _build_v1()
SLOT_COUNT_BY_VERSION: dict[int, int] = {1: len(_ROWS)}
ACTION_SPACE_VERSION = max(SLOT_COUNT_BY_VERSION)


@cache
def slots(version: int = ACTION_SPACE_VERSION) -> tuple[Slot, ...]:
    """All slots of a version, in id order (a prefix of every later version)."""
    if version not in SLOT_COUNT_BY_VERSION:
        raise ValueError(f"unknown action space version {version}; known: {sorted(SLOT_COUNT_BY_VERSION)}")
    out = []
    for i, row in enumerate(_ROWS[: SLOT_COUNT_BY_VERSION[version]]):
        name, group, kind, units, mode, desc, low, high, *rest = row
        out.append(Slot(i, name, group, kind, units, mode, desc, float(low), float(high), tuple(rest[0]) if rest else ()))
    return tuple(out)


@cache
def _by_name(version: int) -> dict[str, Slot]:
    table = {s.name: s for s in slots(version)}
    assert len(table) == len(slots(version)), "slot names must be unique"
    return table


def slot(name: str, version: int = ACTION_SPACE_VERSION) -> Slot:
    """Look a slot up by name; an unknown name is answered with the closest names."""
    table = _by_name(version)
    if name not in table:
        raise KeyError(f"unknown slot '{name}'{did_you_mean(name, table)}")
    return table[name]


def groups(version: int = ACTION_SPACE_VERSION) -> list[str]:
    return list(dict.fromkeys(s.group for s in slots(version)))

