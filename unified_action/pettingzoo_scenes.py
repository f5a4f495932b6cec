"""PettingZoo scenes with several agents, each made to look like ONE gymnasium env (as robosuite_arms.py does an arm).

A world model sees one frame and one action vector per step, so a scene's agents become one body: the joint action
is the agents' actions concatenated in the env's `possible_agents` order (a fixed tuple, `PettingZooScene.agents`),
the reward is their sum, and the episode ends when any agent's does. Nothing is imported by a name from data: the
allow-list `PETTINGZOO_SCENES` maps a scene name to its module, imported with importlib only when a scene is made,
and `ALLOWED_KWARGS` names the keyword arguments each scene accepts.

cooperative_pong_v6 (pettingzoo.butterfly): two paddles keep one ball in play; agents paddle_0, paddle_1, each
  Discrete(3) (0 stay, 1 up, 2 down, 12 px a step), so the joint action is MultiDiscrete([3, 3]), e.g. [1, 0].
  The env renders the whole 280x480 playfield (black, white paddles and ball). Measured at 64x64 (plain resize,
  stepping one paddle only under two action sequences from the same seed and diffing frames): paddle_0 lives in
  the LEFT half (columns 0-31: mean squared change 583 there, 0 in the right half), paddle_1 in the RIGHT half
  (3101 there, 0 on the left). Episodes: max_cycles 900 by default, but under the behaviour policy the ball goes
  out (terminated) after 27..150 steps, median 40, mean 56 (20 seeds). Summed reward: 2 x 100/900 a step in
  play, -20 when the ball goes out. The env's render_fps is 15.
simple_spread_v3 (mpe2): N agents (2..5, default 3) and N landmarks on a 2-d plane; agents agent_0..agent_{N-1},
  each Discrete(5) (no-op, left, right, down, up: the cards' choice) or, with continuous_actions=True, Box(0, 1,
  (5,)) ([no-op, left, right, down, up] pushes, the force is right - left and up - down). Episodes last
  max_cycles = 25 steps by default (truncated; no termination unless terminate_on_success). The 700x700 frame is
  white, agents blue-grey discs, landmarks small dark-grey dots, centred on the world origin and zoomed so the
  farthest entity sits at 90% of the half-width: the view zooms out as agents wander off. render_fps 10. So
  `render` draws the world itself instead (fixed view, one colour per agent: SPREAD_VIEW below).
Speed (one core of a 2-core shared CPU, behaviour policy + step + render resized to 64x64, 500 steps): cooperative
pong ~230 steps/s, simple_spread ~233 steps/s at N=2 and ~221 at N=4: pygame's drawing is cheap, nothing like MuJoCo.

Seeding: `reset(seed=s)` reseeds the env's own Generator (pong rebuilds its game on it: the ball's start direction;
simple_spread draws agent and landmark positions from it), so an episode is a function of its seed alone, whatever
ran before in the process (tests/test_pettingzoo_scenes.py checks it). Neither scene draws from numpy's global RNG
as configured here: mpe2's physics adds np.random noise only for agents with u_noise/c_noise set, which
simple_spread never sets, and its agents are silent.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from unified_action.policies import SmoothRandom, StickyRandom

PETTINGZOO_SCENES = {
    "cooperative_pong_v6": "pettingzoo.butterfly.cooperative_pong_v6",
    "simple_spread_v3": "mpe2.simple_spread_v3",
}
# render_mode, render_ratio (the frame size) and the discrete/continuous switch are ours to set, not a card's
ALLOWED_KWARGS = {
    "cooperative_pong_v6": frozenset({"ball_speed", "left_paddle_speed", "right_paddle_speed", "cake_paddle",
                                      "max_cycles", "bounce_randomness", "max_reward", "off_screen_penalty"}),
    "simple_spread_v3": frozenset({"N", "max_cycles", "local_ratio", "dynamic_rescaling", "terminate_on_success",
                                   "continuous_actions"}),
}
# simple_spread's cards use the discrete actions (Discrete(5): no-op, left, right, down, up: exactly the d-pad, a
# table onto gamepad.dpad_*); the continuous ones ([no-op, left, right, down, up] pushes whose differences are the
# force) have no per-value slot that means them. Both are allowed; nothing is forced.
_FORCED_KWARGS: dict[str, dict] = {}
# simple_spread drawn by us from the simulator's state, with a FIXED view of +-SPREAD_VIEW world units: mpe2's own
# render zooms with the farthest entity (the camera would move under the agents' actions), and draws every agent in
# one colour; here agent k has colour k, so a frame says which agent is which (as pong's halves do). Agents start
# uniformly in [-1, 1]^2; the behaviour policy turns them back past KEEP_IN_VIEW, so they stay in the view.
SPREAD_VIEW = 1.4
KEEP_IN_VIEW = 1.0  # the discrete behaviour policy turns an agent back past this (PettingZooScene._kept_in_view)
MIN_PADDLE_PX = 3  # pong's paddles in the frame: at least this many pixels wide (PettingZooScene._draw_pong)
AGENT_COLOURS = ((220, 50, 47), (38, 139, 210), (133, 153, 0), (211, 54, 130), (181, 137, 0), (42, 161, 152),
                 (108, 113, 196), (203, 75, 22))  # one per agent slot (the vocabulary's 8)
# a paddle repeats its last choice with this probability: with 0.8 each paddle moves on 48% of steps (20 seeds, 1116
# steps; 0.7: 54%, 0.9: 38%, as long runs pin a paddle against a wall where it stops), in runs of ~5 steps (60 px)
STICKY_REPEAT = 0.8


def check_scene(name: str, kwargs: dict) -> None:
    """Raise ValueError (one line naming the culprit) unless `name` and every kwarg are on the allow-lists."""
    if name not in PETTINGZOO_SCENES:
        raise ValueError(f"pettingzoo scene '{name}' is not on the allow-list ({', '.join(sorted(PETTINGZOO_SCENES))})")
    unknown = sorted(set(kwargs) - ALLOWED_KWARGS[name])
    if unknown:
        raise ValueError(f"pettingzoo scene {name}: kwarg '{unknown[0]}' is not allowed "
                         f"(allowed: {', '.join(sorted(ALLOWED_KWARGS[name]))})")
    for k, v in _FORCED_KWARGS.get(name, {}).items():
        if k in kwargs and kwargs[k] != v:
            raise ValueError(f"pettingzoo scene {name}: kwarg '{k}' must be {v}, got {kwargs[k]!r}")
    n = kwargs.get("N", 3)
    if name == "simple_spread_v3" and (type(n) is not int or n not in range(2, 6)):  # 3.0 or True would pass `in`
        raise ValueError(f"pettingzoo scene {name}: kwarg 'N' must be 2..5, got {kwargs['N']!r}")


class PettingZooScene:
    """One PettingZoo parallel env behind gymnasium's single-agent interface (reset(seed) -> (obs, info), step,
    render, close), so sims' recording and replay treat it as any other simulator: the flat joint action in
    `agents` order, the summed reward, frames at width x height."""

    def __init__(self, name: str, kwargs: dict, width: int, height: int, sticky_repeat: float = STICKY_REPEAT):
        from gymnasium import spaces

        check_scene(name, kwargs)
        os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # pygame prints a banner at import otherwise
        with warnings.catch_warnings():
            # pettingzoo's *_v6 modules warn at import that it prefers its registry (pettingzoo.make by a name string);
            # importing an allow-listed module is the point here, so the warning says nothing a user can act on
            warnings.simplefilter("ignore", DeprecationWarning)
            module = importlib.import_module(PETTINGZOO_SCENES[name])
        self.name, self.width, self.height, self.sticky_repeat = name, width, height, sticky_repeat
        self.env = module.parallel_env(render_mode="rgb_array", **{**kwargs, **_FORCED_KWARGS.get(name, {})})
        self.agents: tuple[str, ...] = tuple(self.env.possible_agents)
        self.agent_spaces = tuple(self.env.action_space(a) for a in self.agents)
        if all(isinstance(s, spaces.Discrete) for s in self.agent_spaces):
            # MultiDiscrete counts from 0: a Discrete with another start is shifted back in step()
            self.action_space = spaces.MultiDiscrete([int(s.n) for s in self.agent_spaces])
            self.agent_action_sizes = tuple(1 for _ in self.agents)
            self._discrete = True
        elif all(isinstance(s, spaces.Box) for s in self.agent_spaces):
            self.action_space = spaces.Box(np.concatenate([s.low.ravel() for s in self.agent_spaces]).astype(np.float32),
                                           np.concatenate([s.high.ravel() for s in self.agent_spaces]).astype(np.float32),
                                           dtype=np.float32)
            self.agent_action_sizes = tuple(int(np.prod(s.shape)) for s in self.agent_spaces)
            self._discrete = False
        else:  # neither allow-listed scene mixes them; a joint space for both would need a Tuple no card can store
            raise ValueError(f"pettingzoo scene {name}: agents mix Discrete and Box actions")
        self.observation_space = spaces.Dict({a: self.env.observation_space(a) for a in self.agents})
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": self.env.metadata.get("render_fps")}
        self._obs: dict[str, Any] = {}

    @property
    def unwrapped(self) -> PettingZooScene:
        return self  # sims reads env.unwrapped.behaviour_policy

    # gymnasium's interface -------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict[str, Any], dict]:
        # both envs reseed their one Generator from `seed` (pong rebuilds its game on it), see the module docstring
        self._obs, infos = self.env.reset(seed=seed, options=options)
        return self._obs, {"agents": infos}

    def _split(self, flat_action) -> dict[str, Any]:
        flat = np.asarray(flat_action).reshape(-1)
        if flat.size != sum(self.agent_action_sizes):
            raise ValueError(f"{self.name}: a joint action has {sum(self.agent_action_sizes)} values "
                             f"{self.agent_action_sizes} in agent order {self.agents}, got {flat.size}")
        actions, at = {}, 0
        for agent, space, size in zip(self.agents, self.agent_spaces, self.agent_action_sizes, strict=True):
            part = flat[at:at + size]
            at += size
            if self._discrete:  # the env's assert wrapper wants a python int
                actions[agent] = int(part[0]) + int(space.start)
            else:
                actions[agent] = part.astype(np.float32).reshape(space.shape)
        return actions

    def step(self, flat_action) -> tuple[dict[str, Any], float, bool, bool, dict]:
        actions = self._split(flat_action)
        if not self.env.agents:  # the episode is over: nothing left to step (sims stops before this)
            return self._obs, 0.0, False, True, {}
        live = {a: actions[a] for a in self.env.agents}  # agents that ended earlier take no action
        self._obs, rewards, terms, truncs, infos = self.env.step(live)
        terminated = any(terms.values())
        # an episode the env ended by removing every agent without a termination flag counts as truncated
        truncated = any(truncs.values()) or (not self.env.agents and not terminated)
        return self._obs, float(sum(rewards.values())), terminated, truncated, {"agents": infos}

    def render(self) -> np.ndarray:
        from PIL import Image

        if self.name == "simple_spread_v3":
            return self._draw_spread()
        if self.name == "cooperative_pong_v6":
            return self._draw_pong()
        frame = np.ascontiguousarray(self.env.render(), dtype=np.uint8)
        # Pong's 280x480 playfield is plainly resized to width x height, not letterboxed: a 64x64 letterbox keeps
        # only 37 rows of field, a plain resize all 64 (paddles and ball squeezed sideways but still ~1-2 px wide).
        # PIL's bilinear resize widens its filter when shrinking, so it averages the area and no thin sprite vanishes.
        if frame.shape[:2] != (self.height, self.width):
            frame = np.asarray(Image.fromarray(frame).resize((self.width, self.height), Image.BILINEAR))
        return frame

    def _draw_pong(self) -> np.ndarray:
        """The game's paddles and ball (its own rects, 480x280 field) drawn white on black at width x height, each
        paddle at least MIN_PADDLE_PX wide (grown toward the field): the field's 7.5x horizontal squeeze to 64 px
        leaves the left paddle (10 px of 480) a dim 1-px line at the frame's edge, which a model at 64x64 loses
        (measured: generated frames dropped it, and swapping its actions changed 0.35 dB). Drawn at 4x, averaged down."""
        from PIL import Image, ImageDraw

        k, game = 4, self.env.unwrapped.env
        W, H = self.width * k, self.height * k
        sx, sy = W / game.area.width, H / game.area.height
        img = Image.new("RGB", (W, H), (0, 0, 0))
        draw = ImageDraw.Draw(img)
        wide = MIN_PADDLE_PX * k
        for paddle, left in ((game.p0, True), (game.p1, False)):
            for r in paddle.rects:
                x0, x1 = r.left * sx, r.right * sx
                if x1 - x0 < wide:  # grow toward the field: the left paddle rightward, the right one leftward
                    x0, x1 = (x0, x0 + wide) if left else (x1 - wide, x1)
                draw.rectangle((x0, r.top * sy, x1 - 1, r.bottom * sy - 1), fill=(255, 255, 255))
        b = game.ball._rect  # noqa: SLF001 (the ball keeps its rect private)
        cx, cy, half = b.centerx * sx, b.centery * sy, max(b.width * sx, 2 * k) / 2
        draw.rectangle((cx - half, cy - half, cx + half - 1, cy + half - 1), fill=(255, 255, 255))
        return np.asarray(img.resize((self.width, self.height), Image.BOX), dtype=np.uint8)

    def _draw_spread(self) -> np.ndarray:
        """The world's landmarks (grey dots) and agents (disc k in colour k) in the fixed view, drawn at 4x and
        averaged down (PIL's box filter), so a disc a few pixels wide keeps its area."""
        from PIL import Image, ImageDraw

        k = 4
        W, H = self.width * k, self.height * k
        img = Image.new("RGB", (W, H), (255, 255, 255))
        draw = ImageDraw.Draw(img)
        world = self.env.unwrapped.world
        for e in list(world.landmarks) + list(world.agents):  # agents on top
            x, y = e.state.p_pos
            cx, cy = (x / SPREAD_VIEW + 1) * W / 2, (1 - y / SPREAD_VIEW) * H / 2  # +y up, as mpe2 draws it
            r = e.size / SPREAD_VIEW * W / 2
            colour = AGENT_COLOURS[world.agents.index(e)] if e in world.agents else (64, 64, 64)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        return np.asarray(img.resize((self.width, self.height), Image.BOX), dtype=np.uint8)

    def close(self) -> None:
        self.env.close()

    # what sims' recording reads --------------------------------------------------------------------------------
    def behaviour_policy(self, seed: int) -> Callable[[], np.ndarray]:
        """Episode `seed`'s joint behaviour: per agent an independent policy (StickyRandom for Discrete, SmoothRandom
        for Box) seeded from (seed, agent index), so agents move differently; their actions concatenated in order."""
        policies = []
        for i, space in enumerate(self.agent_spaces):
            s = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
            if self._discrete:  # values 0..n-1, as MultiDiscrete counts them
                policies.append(StickyRandom(int(space.n), s, self.sticky_repeat))
            else:
                policies.append(SmoothRandom(space.low, space.high, s))
        dtype = self.action_space.dtype
        joint = lambda: np.concatenate([np.atleast_1d(p()).ravel() for p in policies]).astype(dtype)  # noqa: E731
        if self.name == "simple_spread_v3" and self._discrete:
            return lambda: self._kept_in_view(joint())
        return joint

    def _kept_in_view(self, actions: np.ndarray) -> np.ndarray:
        """simple_spread has no walls: under random pushes an agent drifts out of any fixed view within ~12 steps. An
        agent beyond KEEP_IN_VIEW units on an axis and moving outward is pushed back toward the centre on that axis
        instead (the action it takes is the one stored, so replays are exact)."""
        for k, agent in enumerate(self.env.unwrapped.world.agents):
            pos, vel = agent.state.p_pos, agent.state.p_vel
            for axis, (inward_neg, inward_pos) in enumerate(((1, 2), (3, 4))):  # x: left, right; y: down, up
                if abs(pos[axis]) > KEEP_IN_VIEW and pos[axis] * vel[axis] > 0:
                    actions[k] = inward_neg if pos[axis] > 0 else inward_pos
        return actions
