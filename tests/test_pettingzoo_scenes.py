"""PettingZoo scenes as one gymnasium-like env: the joint action's layout, seeded episodes, which part of the frame
each paddle moves, and the allow-lists. Real simulators, ~10 steps each (a few hundred steps/s at 64x64)."""

import numpy as np
import pytest
from gymnasium import spaces

from unified_action.pettingzoo_scenes import ALLOWED_KWARGS, PETTINGZOO_SCENES, PettingZooScene

SCENES = [("cooperative_pong_v6", {}, ("paddle_0", "paddle_1"), spaces.MultiDiscrete, (1, 1)),
          ("simple_spread_v3", {"N": 2}, ("agent_0", "agent_1"), spaces.MultiDiscrete, (1, 1)),
          ("simple_spread_v3", {"N": 4, "continuous_actions": True}, ("agent_0", "agent_1", "agent_2", "agent_3"),
           spaces.Box, (5, 5, 5, 5))]


def _episode(scene: PettingZooScene, seed: int, steps: int = 10):
    """Frames and observations of `steps` steps under the behaviour policy of episode `seed`."""
    obs, _ = scene.reset(seed=seed)
    policy = scene.behaviour_policy(seed)
    frames, observations = [scene.render()], [obs]
    for _ in range(steps):
        obs, *_ = scene.step(policy())
        frames.append(scene.render())
        observations.append(obs)
    return np.stack(frames), observations


@pytest.mark.parametrize("name,kwargs,agents,space_type,sizes", SCENES)
def test_a_scene_is_one_env_with_the_agents_actions_concatenated(name, kwargs, agents, space_type, sizes):
    scene = PettingZooScene(name, kwargs, 64, 48)
    try:
        assert scene.unwrapped is scene and not hasattr(type(scene), "np_random")  # sims._start's check
        assert scene.agents == agents and scene.agent_action_sizes == sizes
        assert isinstance(scene.action_space, space_type) and len(scene.agent_spaces) == len(agents)
        assert scene.action_space.shape == (sum(sizes),)
        if space_type is spaces.MultiDiscrete:
            assert scene.action_space.nvec.tolist() == [3 if name == "cooperative_pong_v6" else 5] * len(agents)
        else:
            assert scene.action_space.dtype == np.float32
            assert np.all(scene.action_space.low == 0) and np.all(scene.action_space.high == 1)
        obs, info = scene.reset(seed=0)
        assert set(obs) == set(agents)
        frame = scene.render()
        assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
        a = scene.behaviour_policy(0)()
        assert a.shape == scene.action_space.shape and scene.action_space.contains(a)
        obs, reward, terminated, truncated, _ = scene.step(a)
        assert set(obs) == set(agents) and isinstance(reward, float)
        assert terminated is False and truncated is False
        with pytest.raises(ValueError, match="joint action"):
            scene.step(np.zeros(sum(sizes) + 1))
    finally:
        scene.close()


@pytest.mark.parametrize("name,kwargs", [("cooperative_pong_v6", {}), ("simple_spread_v3", {"N": 3})])
def test_an_episode_is_a_function_of_its_seed(name, kwargs):
    scene = PettingZooScene(name, kwargs, 64, 64)
    try:
        frames, observations = _episode(scene, 5)
        other, _ = _episode(scene, 6)  # another episode in between must not leak into the next one
        again, observations_again = _episode(scene, 5)
    finally:
        scene.close()
    assert np.array_equal(frames, again)
    for o, p in zip(observations, observations_again, strict=True):
        assert all(np.array_equal(o[a], p[a]) for a in o)
    assert not np.array_equal(frames, other)


def test_the_agents_of_a_scene_act_differently_under_the_behaviour_policy():
    scene = PettingZooScene("simple_spread_v3", {"N": 2, "continuous_actions": True}, 64, 64)
    try:
        policy = scene.behaviour_policy(0)
        actions = np.stack([policy() for _ in range(20)])
    finally:
        scene.close()
    assert not np.allclose(actions[:, :5], actions[:, 5:])  # each agent seeded from (seed, its index)


@pytest.mark.parametrize("paddle,half", [(0, slice(0, 32)), (1, slice(32, 64))])
def test_a_paddle_changes_the_frame_in_its_own_half(paddle, half):
    """paddle_0 up vs down (paddle_1 still): the change lives in the left half; paddle_1 likewise in the right. 12
    steps: the ball, which starts in the middle at 9 px a step, reaches no paddle yet, so only the paddle differs."""
    scene = PettingZooScene("cooperative_pong_v6", {}, 64, 64)
    runs = []
    try:
        for move in (1, 2):
            scene.reset(seed=3)
            action = np.zeros(2, np.int64)
            action[paddle] = move
            frames = []
            for _ in range(12):
                scene.step(action)
                frames.append(scene.render().astype(np.float64))
            runs.append(np.stack(frames))
    finally:
        scene.close()
    change = (runs[0] - runs[1]) ** 2
    other = slice(32, 64) if half.start == 0 else slice(0, 32)
    own, elsewhere = change[:, :, half].mean(), change[:, :, other].mean()
    assert own > 0 and own > 5 * elsewhere, (own, elsewhere)


@pytest.mark.parametrize("name,kwargs,culprit", [("knights_archers_zombies_v10", {}, "knights_archers_zombies_v10"),
                                                 ("simple_spread_v3", {"render_mode": "human"}, "render_mode"),
                                                 ("cooperative_pong_v6", {"N": 2}, "'N'"),
                                                 ("simple_spread_v3", {"N": 7}, "'N'"),
                                                 ("simple_spread_v3", {"N": 3, "seed": 1}, "'seed'")])
def test_an_unknown_scene_or_kwarg_is_a_one_line_value_error(name, kwargs, culprit):
    with pytest.raises(ValueError) as e:
        PettingZooScene(name, kwargs, 64, 64)
    assert culprit in str(e.value) and "\n" not in str(e.value)


def test_the_card_schema_allows_exactly_the_scenes_this_module_can_make():
    from unified_action.cards.schema import PETTINGZOO_SCENES as CARD_SCENES

    assert set(CARD_SCENES) == set(PETTINGZOO_SCENES)


def test_the_allow_lists_name_the_same_scenes():
    assert set(PETTINGZOO_SCENES) == set(ALLOWED_KWARGS) == {"cooperative_pong_v6", "simple_spread_v3"}
    assert all(m.startswith(("pettingzoo.", "mpe2.")) for m in PETTINGZOO_SCENES.values())


@pytest.mark.parametrize("card_name", ["pettingzoo_cooperative_pong", "pettingzoo_simple_spread_n2",
                                       "pettingzoo_simple_spread_n5"])
def test_a_card_records_each_agents_actions_and_replays_its_frames(card_name):
    from support import CARDS

    from unified_action.cards import load_card
    from unified_action.sims import record_episodes, replay

    card = load_card(CARDS / f"{card_name}.md")
    ep = next(record_episodes(card, [0], steps=20, seed=7))
    assert list(ep.actions) == [f"{a}/action" for a in card.header.agent_names]  # one field per agent, in order
    native = np.stack([ep.actions[f"{a}/action"] for a in card.header.agent_names], axis=1)
    assert len({tuple(col) for col in native.T}) > 1  # the agents act differently
    every = card.header.frame_every
    again = replay(card, 7, native, at=range(0, len(native), every))[card.header.cameras[0].name]
    assert np.array_equal(again, ep.frames[card.header.cameras[0].name])  # seed + actions give back every frame
