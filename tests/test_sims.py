"""Actions from the real simulators, through their cards: shapes, ranges, and that policies vary actions."""

import numpy as np
import pytest
from support import CARDS

from unified_action.cards import load_card
from unified_action.policies import SmoothRandom, StickyRandom, WaypointRandom
from unified_action.sims import record_actions

STEPPED = ["ale_pong", "carracing", "highway_fast", "gym_pusht", "metaworld_pick_place", "robosuite_lift_ur5e_osc",
           "robosuite_lift_panda_joint"]


@pytest.mark.slow
@pytest.mark.parametrize("name", STEPPED)
def test_recorded_actions_fit_the_card(name):
    card = load_card(CARDS / f"{name}.md")
    eps = record_actions(card, episodes=2, steps=25, seed=3)
    again = record_actions(card, episodes=2, steps=25, seed=3)
    for ep, ep2 in zip(eps, again):
        np.testing.assert_array_equal(ep, ep2)  # seeded: reproducible
        assert ep.shape[1] == card.mapping.native_dim and 1 <= len(ep) <= 25
        unified, outside = card.mapping.to_unified(ep)
        assert not outside.any()
        m = card.mapping
        declared = ~np.isnan(m.native_low)
        assert np.all(ep[:, declared] >= m.native_low[declared] - 1e-6)
        assert np.all(ep[:, declared] <= m.native_high[declared] + 1e-6)


@pytest.mark.slow
def test_aloha_action_space_matches_its_card():
    card = load_card(CARDS / "gym_aloha_insertion.md")
    [ep] = record_actions(card, episodes=1, steps=100, seed=0, step_env=False, style="waypoint")
    assert ep.shape == (100, 14)
    unified, _ = card.mapping.to_unified(ep)
    assert unified.shape == (100, 14)


def test_policies_are_seeded_and_vary():
    p, q = SmoothRandom([-1, 0], [1, 2], seed=1), SmoothRandom([-1, 0], [1, 2], seed=1)
    a = np.array([p() for _ in range(200)])
    np.testing.assert_array_equal(a, [q() for _ in range(200)])
    assert a[:, 0].min() >= -1 and a[:, 1].max() <= 2 and a.std(0).min() > 0.01
    w = WaypointRandom([-1], [1], seed=0)
    path = np.array([w() for _ in range(100)])[:, 0]
    assert np.abs(np.diff(path, 2)).max() < 0.05  # smooth: small second differences
    s = StickyRandom(18, seed=0, p_repeat=0.9)
    acts = np.array([s() for _ in range(500)])
    changes = (np.diff(acts) != 0).mean()
    assert 0.02 < changes < 0.2 and len(set(acts.tolist())) > 10


def test_a_cards_sticky_repeat_sets_how_often_the_discrete_policy_changes(cards_dir):
    """Pong's card asks for shorter runs than the default (its paddle sits at a wall otherwise)."""
    from gymnasium import spaces

    from unified_action.cards import load_card
    from unified_action.policies import policy_for_space

    repeat = load_card(cards_dir / "ale_pong.md").header.source.sticky_repeat
    assert repeat == 0.6
    rates = {}
    for r in (0.9, repeat):
        pol = policy_for_space(spaces.Discrete(18), seed=0, repeat=r)
        acts = np.array([pol() for _ in range(2000)])
        rates[r] = (np.diff(acts) != 0).mean()
    assert abs(rates[0.9] - 0.1 * 17 / 18) < 0.03 and abs(rates[repeat] - 0.4 * 17 / 18) < 0.04


@pytest.mark.slow
def test_recording_does_not_flood_the_log_with_gymnasiums_checker_warnings():
    """Meta-World declares observation bounds its own observations break: gymnasium's passive checker warned about it
    in every recording worker, a flood in `uact demo`'s log about nothing a user can act on."""
    import warnings

    card = load_card(CARDS / "metaworld_pick_place.md")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record_actions(card, episodes=1, steps=3, seed=0)
    assert not [w for w in caught if "passive_env_checker" in w.filename], [str(w.message) for w in caught]


@pytest.mark.slow
@pytest.mark.parametrize("name,steps", [("gym_pusht", 24), ("ale_pong", 24), ("carracing", 24),
                                        ("metaworld_pick_place", 24), ("highway_fast", 8), ("gym_aloha_insertion", 6),
                                        ("robosuite_lift_sawyer_osc", 16), ("robosuite_lift_ur5e_joint", 16)])
def test_replaying_the_recorded_actions_reproduces_the_recorded_frames(name, steps):
    """The simulator's truth a counterfactual evaluation needs: an episode stepped again from its seed under its
    own recorded actions (as stored: the card's dtype) shows exactly the recorded frames; under other actions from
    step k on it shows the same frames up to k and then others."""
    from unified_action.sims import Replayer, record_episodes, replay

    card = load_card(CARDS / f"{name}.md")
    ep = next(record_episodes(card, [3], steps, seed=100))
    actions = ep.actions[card.header.action[0].path]
    every = card.header.frame_every  # recorded frame i is step i * every (robosuite's cards: 4); replay renders each step
    again = replay(card, 103, actions)
    assert again.keys() == ep.frames.keys()
    for cam, frames in ep.frames.items():
        shown = again[cam][::every]
        assert len(shown) in (len(frames) + 1, len(frames))  # + the frame after the last action, unless it ended
        assert np.array_equal(shown[:len(frames)], frames), cam
    k = len(actions) // 2
    other = next(record_episodes(card, [4], steps, seed=100)).actions[card.header.action[0].path]
    cf = replay(card, 103, actions[:k], then=other[: len(actions) - k])
    for cam, frames in ep.frames.items():
        # frame k is shown before the first other action
        assert np.array_equal(cf[cam][:k + 1][::every], frames[:k // every + 1]), cam
        assert not np.array_equal(cf[cam][::every], frames[: len(cf[cam][::every])]), cam
    # rendering only some steps' frames, in one simulator replaying two episodes, gives those same frames
    picks = [p for p in (k - 2, k, len(actions)) if p < min(map(len, cf.values()))]  # highway-env may crash first
    with Replayer(card) as again:
        first = again(104, actions[:k])  # another episode first: the next replay must not depend on it
        some = again(103, actions[:k], then=other[: len(actions) - k], at=picks)
    assert first.keys() == some.keys()
    for cam, frames in cf.items():
        assert np.array_equal(some[cam], frames[picks]), cam


@pytest.mark.slow
def test_a_card_with_frame_every_renders_only_every_kth_step_and_replay_matches(tmp_path):
    """Meta-World's camera is env.render(), most of a recording's time: with source.frame_every 4 only steps 0, 4, 8, ...
    are rendered and stored, and they are exactly the frames a recording of every step shows at those steps (same
    seed, same steps). Everything else is still every step. replay(at=...) renders the same steps."""
    from unified_action.sims import record_episodes, replay

    text = (CARDS / "metaworld_pick_place.md").read_text()
    assert "  env_id: Meta-World/MT1\n" in text
    (tmp_path / "metaworld_pick_place.md").write_text(text.replace("  env_id: Meta-World/MT1\n",
                                                                    "  env_id: Meta-World/MT1\n  frame_every: 4\n"))
    every, each = load_card(tmp_path / "metaworld_pick_place.md"), load_card(CARDS / "metaworld_pick_place.md")
    assert every.header.frame_every == 4 and each.header.frame_every == 1
    [ep] = record_episodes(every, [0], 17, seed=2)
    [ep1] = record_episodes(each, [0], 17, seed=2)
    assert ep.frame_every == 4 and ep1.frame_every == 1 and len(ep) == len(ep1) == 17
    ep.check(every)
    assert len(ep.frames["corner2"]) == 5 and len(ep1.frames["corner2"]) == 17  # steps 0, 4, 8, 12, 16 rendered
    assert np.array_equal(ep.frames["corner2"], ep1.frames["corner2"][::4])
    path = every.header.action[0].path
    assert np.array_equal(ep.actions[path], ep1.actions[path]) and np.array_equal(ep.reward, ep1.reward)
    for p in ep.proprio:
        assert np.array_equal(ep.proprio[p], ep1.proprio[p])
    # replay: 17 actions -> steps 0..16 rendered every 4th
    again = replay(every, 2, ep.actions[path], at=range(0, 17, 4))["corner2"]
    assert np.array_equal(again, ep.frames["corner2"])
    # 12 own actions, then 4 more: the frame after the last action (step 16) is a 4th step, and is there
    again = replay(every, 2, ep.actions[path][:12], then=ep.actions[path][12:16], at=range(0, 17, 4))["corner2"]
    assert np.array_equal(again, ep.frames["corner2"])
    assert np.array_equal(replay(each, 2, ep.actions[path][:16])["corner2"], ep1.frames["corner2"][:17])  # default: every step
