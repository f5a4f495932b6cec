"""Controls from cards: every shipped card's slots get a control, rest encodes to the card's neutral native action,
held keys ramp and return, tables pick their legal action, the gamepad takes over."""

from __future__ import annotations

import numpy as np
import pytest
from support import CARDS

from unified_action import action_space
from unified_action.action_space import SlotKind
from unified_action.cards import load_card
from unified_action.errors import UnifiedActionError
from unified_action.play.controls import Controls
from unified_action.tokenization import Registry

ALL_CARDS = sorted(p.stem for p in CARDS.glob("*.md"))
SEVERAL_AGENTS = [n for n in ALL_CARDS if load_card(CARDS / f"{n}.md").mapping.agents]
SHIPPED = [n for n in ALL_CARDS if n not in SEVERAL_AGENTS]  # uact play drives one agent (see the refusal test)
OSC = [0, 0, 0, 0, 0, 0, -1]  # robosuite OSC_POSE: no motion, gripper open (native -1)
# The rest of each card, read from the card by hand: no motion, nothing pressed, grippers open, the first choice
NEUTRAL = {
    "ale_breakout": [0], "ale_pong": [0],  # NOOP
    "bridge_dataset": [0, 0, 0, 0, 0, 0, 1],  # gripper 1 = open
    "carracing": [0, 0, 0],
    "fractal20220817_data": [0] * 10 + [0, 1, 0],  # terminate_episode one-hot 'continue'
    # positions rest where the episode left them (its last action, `start`); ALOHA's grippers (dims 6, 13) open
    "gym_pusht": lambda start: start,
    "gym_aloha_insertion": lambda start: [*start[:6], 1, *start[7:13], 1],
    "lerobot_aloha_sim_insertion_human": lambda start: [*start[:6], 1, *start[7:13], 1],
    "highway_fast": [1],  # IDLE
    "metaworld_pick_place": [0, 0, 0, -1],  # gripper -1 = open
    "robosuite_lift_iiwa_osc": OSC, "robosuite_lift_jaco_osc": OSC, "robosuite_lift_kinova3_osc": OSC,
    "robosuite_lift_panda_osc": OSC, "robosuite_lift_sawyer_osc": OSC, "robosuite_lift_ur5e_osc": OSC,
    "robosuite_lift_panda_joint": [0] * 7 + [-1], "robosuite_lift_ur5e_joint": [0] * 6 + [-1],
}


def synthetic_episodes(card, n=6, steps=60, seed=0):
    """Native episodes from random unified values within each slot's nominal range (tables pick their nearest row):
    enough to fit a tokenizer's statistics without running every simulator."""
    rng = np.random.default_rng(seed)
    m = card.mapping
    out = []
    for _ in range(n):
        u = np.zeros((steps, m.dim))
        for i, s in enumerate(m.slots):
            if s.kind is SlotKind.CONTINUOUS:
                u[:, i] = rng.uniform(s.low, s.high, steps) * (0.2 if "rot" in s.name else 1.0)
            else:
                u[:, i] = rng.integers(0, s.num_classes, steps)
        out.append(m.to_native(u))
    return out


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A registry with every shipped card's tokenizer, fitted on synthetic episodes."""
    reg = Registry(tmp_path_factory.mktemp("all_cards"))
    for name in SHIPPED:
        card = load_card(CARDS / f"{name}.md")
        reg.register(card, synthetic_episodes(card))
    return reg


def test_every_card_is_covered():
    assert set(NEUTRAL) == set(SHIPPED)
    assert {"pettingzoo_cooperative_pong", "pettingzoo_simple_spread_n3"} <= set(SEVERAL_AGENTS)


@pytest.mark.parametrize("name", SEVERAL_AGENTS)
def test_a_card_of_several_agents_is_refused_in_one_line(name):
    with pytest.raises(UnifiedActionError, match=r"agents \(.*\); uact play drives embodiments of one agent$"):
        Controls(load_card(CARDS / f"{name}.md"))


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_every_slot_gets_a_control_and_rest_encodes_to_the_neutral_action(shipped, name):
    tok = shipped.load(name)
    card = tok.card
    start = synthetic_episodes(card, n=1, steps=1, seed=3)[0][0]
    controls = Controls(card, tok.stats, start_native=start)
    assert [c.slot for c in controls.controls] == card.mapping.slot_names  # every slot, once, in slot order
    keys = [k for c in controls.controls for k in c.keys]
    assert len(keys) == len(set(keys)) and all(keys)  # no key moves two slots
    for c in controls.controls:
        slot = action_space.slot(c.slot)
        assert c.low <= c.rest <= c.high, c
        want_keys = {"axis": 2, "target": 2, "pedal": 1, "button": 1}.get(c.kind, min(slot.num_classes - 1, 9))
        assert len(c.keys) == want_keys, c
    want = NEUTRAL[name]
    native = controls.neutral_native()
    if callable(want):
        want = want(start)
    np.testing.assert_allclose(native, np.asarray(want, dtype=float), atol=1e-9)
    chunk, _ = controls.chunk(held=())
    assert chunk.shape == (tok.horizon, card.mapping.native_dim)
    got = tok.encode_native(chunk[None])
    ref = tok.encode_native(np.repeat(np.asarray(want, dtype=float)[None, None], tok.horizon, 1))
    assert np.array_equal(got.tokens, ref.tokens) and np.array_equal(got.mask, ref.mask)


def test_held_keys_ramp_and_return():
    card = load_card(CARDS / "carracing.md")
    c = Controls(card)
    steer, gas, brake = c.controls
    assert (steer.kind, gas.kind, brake.kind) == ("axis", "pedal", "pedal")
    assert steer.keys == ("ArrowLeft", "ArrowRight") and gas.keys == ("ArrowUp",) and brake.keys == ("ArrowDown",)
    values = [c.step({"ArrowRight", "ArrowUp"}) for _ in range(40)]
    assert 0 < values[0][0] < values[5][0] < values[-1][0] == pytest.approx(1.0)  # ramps, then holds full right
    assert values[-1][1] == pytest.approx(1.0) and values[-1][2] == 0
    back = [c.step(set()) for _ in range(20)]
    assert back[0][0] < values[-1][0] and back[-1][0] == pytest.approx(0.0) and back[-1][1] == pytest.approx(0.0)
    native, _ = c.chunk({"ArrowLeft"})
    assert native.shape == (5, 3) and (native[:, 0] < 0).all()


def test_tables_pick_the_legal_action_and_choices_are_keys():
    pong = Controls(load_card(CARDS / "ale_pong.md"))
    assert [c.kind for c in pong.controls] == ["button"] * 5
    assert pong.mapping.to_native(pong.step({"ArrowUp", "Space"}))[0] == 10  # UPFIRE
    assert pong.mapping.to_native(pong.step({"ArrowUp", "ArrowDown"}))[0] == 2  # no such action: the first nearest, UP
    highway = Controls(load_card(CARDS / "highway_fast.md"))
    lane, speed = highway.controls
    assert lane.kind == speed.kind == "choice" and lane.labels == ("keep", "left", "right")
    to = highway.mapping.to_native
    assert to(highway.step({"ArrowLeft"}))[0] == 0 and to(highway.step({"ArrowUp"}))[0] == 3  # LANE_LEFT, FASTER
    assert to(highway.step(set()))[0] == 1  # IDLE


def test_gamepad_takes_over_and_positions_hold():
    c = Controls(load_card(CARDS / "carracing.md"))
    pad = {"axes": [-0.5, 0, 0, 0], "buttons": [0] * 6 + [0.0, 0.8] + [0] * 8}
    v = c.step(set(), pad)
    assert v[0] == pytest.approx(-0.5) and v[1] == pytest.approx(0.8) and v[2] == 0
    assert c.controls[0].pad == "axis:0" and c.controls[1].pad == "button:7"
    pusht = Controls(load_card(CARDS / "gym_pusht.md"), start_native=np.array([100.0, 300.0]))
    x, y = pusht.controls
    assert x.kind == y.kind == "target"
    moved = [pusht.step({x.keys[1]}) for _ in range(5)][-1]
    still = [pusht.step(set()) for _ in range(5)][-1]
    assert moved[0] > 0.1 and still[0] == moved[0]  # a position stays where it was left
    assert pusht.mapping.to_native(still)[1] == pytest.approx(300.0)


@pytest.mark.slow
def test_stats_of_another_tokenizer_are_refused(shipped):
    with pytest.raises(UnifiedActionError, match="statistics of another tokenizer"):
        Controls(load_card(CARDS / "ale_pong.md"), shipped.load("carracing").stats)
    with pytest.raises(UnifiedActionError, match="start_native: expected 3 finite"):
        Controls(load_card(CARDS / "carracing.md"), start_native=np.zeros(4))
