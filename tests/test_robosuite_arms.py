"""robosuite's arms through their cards: the suite shares action slots, episodes are functions of their seeds,
and the behaviour policy makes the arm move visibly."""

import numpy as np
import pytest
from support import CARDS

from unified_action.cards import load_card
from unified_action.errors import CardError
from unified_action.sims import record_episodes

OSC = [f"robosuite_lift_{a}_osc" for a in ("panda", "sawyer", "iiwa", "jaco", "kinova3", "ur5e")]
JOINT = ["robosuite_lift_panda_joint", "robosuite_lift_ur5e_joint"]


def test_the_suites_arms_fill_the_same_slots_and_one_body_keeps_its_embodiment_under_two_controllers():
    cards = {n: load_card(CARDS / f"{n}.md") for n in OSC + JOINT}
    slots = {n: [s for f in c.header.action for s in f.slots] for n, c in cards.items()}
    assert len({tuple(slots[n]) for n in OSC}) == 1  # every arm's OSC action means the same thing
    assert {c.header.embodiment for c in cards.values()} == {"panda", "sawyer", "iiwa", "jaco", "kinova3", "ur5e"}
    for n in JOINT:
        osc = n.replace("_joint", "_osc")
        assert cards[n].header.embodiment == cards[osc].header.embodiment
        assert "right_arm.joint_pos_delta.0" in slots[n] and "right_arm.eef_pos_delta.x" not in slots[n]
    # the same native command means the same unified value on every arm: 1 = 5 cm, 0.5 rad, gripper closed
    unified = {n: cards[n].mapping.to_unified(np.ones((1, 7)))[0] for n in OSC}
    assert all(np.allclose(u, unified[OSC[0]]) for u in unified.values())
    assert np.allclose(np.sort(unified[OSC[0]][0]), [0.0, 0.05, 0.05, 0.05, 0.5, 0.5, 0.5])  # slot order: gripper first


@pytest.mark.parametrize("field,value,expected", [("robot", "Baxter", "Panda"), ("controller", "JOINT_VELOCITY", "OSC_POSE"),
                                                   ("task", "TwoArmLift", "Lift")])
def test_a_task_robot_or_controller_off_the_allow_list_is_one_line(tmp_path, field, value, expected):
    text = (CARDS / "robosuite_lift_panda_osc.md").read_text()
    default = {"robot": "Panda", "controller": "OSC_POSE", "task": "Lift"}[field]
    path = tmp_path / "robosuite_lift_panda_osc.md"
    path.write_text(text.replace(f"  {field}: {default}\n", f"  {field}: {value}\n", 1))
    with pytest.raises(CardError) as e:
        load_card(path)
    assert f"source.robosuite.{field}" in str(e.value) or f"source.{field}" in str(e.value)
    assert expected in str(e.value) and "Traceback" not in str(e.value)


@pytest.mark.slow
def test_an_episode_depends_on_its_seed_only_and_the_arm_moves():
    """Episode 1 recorded after episode 0 in one simulator equals episode 1 recorded alone (a part of a recording
    split over processes records the same episodes); the arm moves between frames, and the episodes differ."""
    card = load_card(CARDS / "robosuite_lift_kinova3_osc.md")
    both = list(record_episodes(card, [0, 1], 24, seed=7))
    alone = next(record_episodes(card, [1], 24, seed=7))
    assert np.array_equal(both[1].frames["free"], alone.frames["free"])
    assert np.array_equal(both[1].actions["action"], alone.actions["action"])
    frames = both[1].frames["free"].astype(np.float32)
    assert frames.shape == (6, 64, 64, 3) and both[1].frame_every == 4  # a frame every 4 steps, the chunk length
    moved = np.abs(frames[1:] - frames[:-1]).mean(axis=(1, 2, 3))
    assert (moved > 0.3).all(), moved  # grey levels a pixel changes on average, one chunk (4 steps) apart
    assert not np.array_equal(both[0].frames["free"], both[1].frames["free"])
