"""Real simulators named by data cards, made headless, and actions recorded from them.

A card names a gymnasium id; the module that registers it comes from this fixed allow-list, never from
the card, so reading a card can't make us import arbitrary code.
"""

from __future__ import annotations

import importlib
import os

import numpy as np

from unified_action.cards import DataCard
from unified_action.errors import DataError
from unified_action.policies import policy_for_space

# gymnasium id prefix -> module whose import registers those ids (gymnasium's own need none).
ENV_MODULES = {
    "ALE/": "ale_py",
    "gym_aloha/": "gym_aloha",
    "gym_pusht/": "gym_pusht",
    "Meta-World/": "metaworld",
    "highway": "highway_env",
    "racetrack": "highway_env",
    "parking": "highway_env",
    "merge": "highway_env",
    "roundabout": "highway_env",
    "intersection": "highway_env",
}


def make_env(card: DataCard, render_mode: str | None = "rgb_array"):
    src = card.header.source
    if src.type != "gymnasium":
        raise DataError(f"{card.name}: source type '{src.type}' is not a simulator")
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless MuJoCo rendering
    import gymnasium as gym

    module = next((m for prefix, m in ENV_MODULES.items() if src.env_id.startswith(prefix)), None)
    if module is not None:
        mod = importlib.import_module(module)
        if module == "ale_py":
            gym.register_envs(mod)
    kwargs = dict(src.env_kwargs)
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    return gym.make(src.env_id, **kwargs)


def record_actions(card: DataCard, episodes: int, steps: int, seed: int = 0, step_env: bool = True,
                   style: str = "smooth") -> list[np.ndarray]:
    """Native actions [steps, native_dim] per episode from the card's simulator under a behaviour policy.

    With step_env the real env is reset and stepped (an episode ends early where the env ends it);
    without, only its action space is used, for simulators too slow to step in a test (ALOHA renders at
    ~7 steps/s on a CPU).
    """
    env = make_env(card, render_mode=None)  # actions only: no frames needed
    out = []
    try:
        for e in range(episodes):
            policy = policy_for_space(env.action_space, seed + e, style)
            if step_env:
                env.reset(seed=seed + e)
            actions = []
            for _ in range(steps):
                a = policy()
                actions.append(np.asarray(a, dtype=np.float64).reshape(-1))
                if step_env:
                    _, _, terminated, truncated, _ = env.step(a)
                    if terminated or truncated:
                        break
            out.append(np.stack(actions))
    finally:
        env.close()
    return out
