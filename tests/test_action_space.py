import json
from pathlib import Path

import pytest

from unified_action import action_space
from unified_action.action_space import SlotKind, SlotMode

GOLDEN = Path(__file__).parent / "golden" / "action_space_v1.json"


def test_v1_table_is_frozen():
    """Append-only: every v1 slot keeps its id, name, group, kind, units, mode and class count forever."""
    frozen = json.loads(GOLDEN.read_text())
    current = action_space.slots(1)
    assert len(current) == len(frozen)
    for row, s in zip(frozen, current):
        assert row == {"id": s.id, "name": s.name, "group": s.group, "kind": s.kind.value, "units": s.units,
                       "mode": s.mode.value, "num_classes": s.num_classes}


def test_later_versions_only_append():
    versions = sorted(action_space.SLOT_COUNT_BY_VERSION)
    for old, new in zip(versions, versions[1:]):
        assert action_space.slots(new)[: len(action_space.slots(old))] == action_space.slots(old)


def test_ids_are_positions_and_names_unique():
    table = action_space.slots()
    assert [s.id for s in table] == list(range(len(table)))
    assert len({s.name for s in table}) == len(table)
    assert all(s.name.startswith(s.group + ".") for s in table)


def test_every_delta_quantity_has_its_own_slot():
    for side in ("right", "left"):
        for q in ("joint_pos", "eef_pos", "gripper"):
            absolute = [s for s in action_space.slots() if s.name.startswith(f"{side}_arm.{q}.") or s.name == f"{side}_arm.{q}"]
            delta = [s for s in action_space.slots() if s.name.startswith(f"{side}_arm.{q}_delta")]
            assert absolute and all(s.mode is SlotMode.ABSOLUTE for s in absolute)
            assert delta and all(s.mode is SlotMode.DELTA for s in delta)
    assert action_space.slot("right_arm.eef_rot_delta.z").mode is SlotMode.DELTA
    assert action_space.slot("base.vel.x").mode is SlotMode.VELOCITY


def test_room_for_seven_plus_joints_and_dexterous_hands():
    assert action_space.slot("right_arm.joint_pos.7").units == "rad"
    assert action_space.slot("left_hand.joint_pos.23").group == "left_hand"


def test_groups_cover_every_embodiment_family():
    assert set(action_space.groups()) >= {"right_arm", "left_arm", "right_hand", "left_hand", "base", "vehicle",
                                          "gamepad", "mouse", "keyboard"}


def test_controller_expresses_atari_18_actions():
    """d-pad (9 directions including none) x fire = 18 distinct button combinations."""
    pad = [action_space.slot(f"gamepad.{b}") for b in ("dpad_up", "dpad_down", "dpad_left", "dpad_right", "a")]
    assert all(s.kind is SlotKind.BINARY for s in pad)
    directions = {(0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (1, 0, 1, 0), (1, 0, 0, 1), (0, 1, 1, 0), (0, 1, 0, 1)}
    assert len({d + (f,) for d in directions for f in (0, 1)}) == 18


def test_categorical_slots_name_their_classes():
    lane = action_space.slot("vehicle.lane_change")
    assert lane.kind is SlotKind.CATEGORICAL and lane.classes == ("keep", "left", "right")
    assert action_space.slot("keyboard.key.0").num_classes == 256


def test_unknown_slot_suggests_the_closest_names():
    with pytest.raises(KeyError, match="did you mean 'right_arm.joint_pos.3'"):
        action_space.slot("right_arm.jont_pos.3")


def test_unknown_version_is_refused():
    with pytest.raises(ValueError, match="unknown action space version 99"):
        action_space.slots(99)
