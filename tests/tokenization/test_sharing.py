"""Shared slots between embodiments' cards (tokenization/sharing.py): which tokenizer may encode another dataset's
native actions, and which pretrained embodiments a new one starts from. On the real cards of data_cards/."""

from __future__ import annotations

from support import CARDS, twin_card

from unified_action.cards import load_card, parse_card
from unified_action.tokenization.sharing import layout_problem, slot_donors


def bridge_variant(old: str, new: str):
    text = (CARDS / "bridge_dataset.md").read_text()
    assert old in text
    return parse_card(text.replace(old, new, 1), "bridge variant")


def test_the_same_mapping_under_another_embodiment_is_compatible(tmp_path):
    for base in ("bridge_dataset", "carracing", "ale_pong"):
        twin = load_card(twin_card(tmp_path, base, f"{base}_twin", "another_arm"))
        assert layout_problem(load_card(CARDS / f"{base}.md").mapping, twin.mapping) is None


def test_what_differs_is_named_in_one_line():
    bridge = load_card(CARDS / "bridge_dataset.md").mapping
    car, pong = (load_card(CARDS / f"{n}.md").mapping for n in ("carracing", "ale_pong"))
    msg = layout_problem(car, pong)
    assert msg.startswith("native action dimension 3, the tokenizer's card has 1; slots differ:")
    assert "vehicle.brake" in msg and "gamepad.dpad_up" in msg and "\n" not in msg
    # the same slots, but the rotation stored as a rotation vector (no rpy_to_rotvec): encoded, it would be wrong
    plain = bridge_variant("transform: {type: rpy_to_rotvec}", "")
    msg = layout_problem(bridge, plain.mapping)
    assert "right_arm.eef_rot_delta.x" in msg and "rpy_to_rotvec" in msg and "identity" in msg
    # the same slots in another native order
    text = (CARDS / "bridge_dataset.md").read_text()
    swapped = parse_card(text.replace("dims: [0, 3]", "dims: [X]").replace("dims: [3, 6]", "dims: [0, 3]")
                         .replace("dims: [X]", "dims: [3, 6]"), "bridge swapped")
    msg = layout_problem(bridge, swapped.mapping)
    assert "native dimension 0" in msg and "another native order" in msg
    # RT-1's card maps the same arm slots in another layout (and more): refused, its extra slots named
    fractal = load_card(CARDS / "fractal20220817_data.md").mapping
    assert layout_problem(bridge, fractal) is not None


def test_donors_share_the_most_slots():
    arm = ["right_arm.eef_pos_delta.x", "right_arm.eef_pos_delta.y", "right_arm.eef_pos_delta.z", "right_arm.gripper"]
    candidates = {"panda": arm, "sawyer": arm[:3] + ["right_arm.gripper"], "jaco": arm[:3], "pong": ["gamepad.a"]}
    assert slot_donors(arm, candidates) == (["panda", "sawyer"], 4)
    assert slot_donors(arm[:2], {"jaco": arm[:3], "pong": ["gamepad.a"]}) == (["jaco"], 2)
    assert slot_donors(arm, {"pong": ["gamepad.a"]}) == ([], 0)
