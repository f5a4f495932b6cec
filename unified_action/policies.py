"""Seeded behaviour policies that make actions matter: smooth random for continuous, sticky for discrete.

A world model learns action conditioning only if actions vary enough to change what happens and persist
long enough for the change to show. Smooth random: an Ornstein-Uhlenbeck process in [-1, 1] followed by
an exponential moving average (robot-like, differentiable-looking trajectories), mapped to the box.
Sticky random: repeat the last choice with probability `p_repeat`, else draw uniformly.
"""

from __future__ import annotations

import numpy as np


class SmoothRandom:
    # theta/sigma/smoothing: an action that changes visibly within a few frames. Smoother ones (theta 0.05, sigma 0.15,
    # smoothing 0.9) made the next frame predictable from the last ones alone: a world model then learns to ignore
    # its actions (the demo measured a shuffled-action loss within 1% of the real one)
    def __init__(self, low, high, seed: int, theta: float = 0.15, sigma: float = 0.5, smoothing: float = 0.5):
        self.low, self.high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        self.rng = np.random.default_rng(seed)
        self.theta, self.sigma, self.smoothing = theta, sigma, smoothing
        self.x = self.rng.uniform(-0.5, 0.5, self.low.shape)
        self.y = self.x.copy()

    def __call__(self) -> np.ndarray:
        self.x = np.clip(self.x - self.theta * self.x + self.sigma * self.rng.standard_normal(self.x.shape), -1, 1)
        self.y = self.smoothing * self.y + (1 - self.smoothing) * self.x
        return self.low + (self.y + 1.0) / 2.0 * (self.high - self.low)


class WaypointRandom:
    """Scripted-demonstration-like motion: random waypoints every `period` steps, joined by minimum-jerk
    segments (the way ACT's scripted ALOHA policies interpolate between poses)."""

    def __init__(self, low, high, seed: int, period: int = 25, spread: float = 0.6):
        self.low, self.high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        self.rng = np.random.default_rng(seed)
        self.period, self.spread = period, spread
        self.start = self.rng.uniform(-spread, spread, self.low.shape)
        self.goal = self.rng.uniform(-spread, spread, self.low.shape)
        self.t = 0

    def __call__(self) -> np.ndarray:
        if self.t == self.period:
            self.start, self.goal, self.t = self.goal, self.rng.uniform(-self.spread, self.spread, self.low.shape), 0
            self.period = int(self.rng.integers(15, 40))
        s = self.t / self.period
        self.t += 1
        y = self.start + (self.goal - self.start) * (10 * s**3 - 15 * s**4 + 6 * s**5)
        return self.low + (y + 1.0) / 2.0 * (self.high - self.low)


class StickyRandom:
    def __init__(self, n: int, seed: int, p_repeat: float = 0.9, shape: tuple[int, ...] = ()):
        self.n, self.p, self.shape = n, p_repeat, shape
        self.rng = np.random.default_rng(seed)
        self.a = self.rng.integers(0, n, shape)

    def __call__(self) -> np.ndarray:
        change = self.rng.random(self.shape) >= self.p
        self.a = np.where(change, self.rng.integers(0, self.n, self.shape), self.a)
        return self.a


def policy_for_space(space, seed: int, style: str = "smooth", repeat: float = 0.9):
    """A behaviour policy for a gymnasium Box (style 'smooth' or 'waypoint'), Discrete, MultiDiscrete or
    MultiBinary space; `repeat`: the discrete policies' chance to repeat the last action (StickyRandom)."""
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        return (WaypointRandom if style == "waypoint" else SmoothRandom)(space.low, space.high, seed)
    if isinstance(space, spaces.Discrete):
        sticky = StickyRandom(int(space.n), seed, repeat)
        return lambda: int(space.start + sticky())
    if isinstance(space, spaces.MultiBinary):
        return StickyRandom(2, seed, repeat, shape=tuple(np.atleast_1d(space.n)))
    if isinstance(space, spaces.MultiDiscrete):
        sticky = StickyRandom(int(space.nvec.max()), seed, repeat, shape=space.nvec.shape)
        return lambda: np.minimum(sticky(), space.nvec - 1)
    raise TypeError(f"no behaviour policy for action space {space}")
