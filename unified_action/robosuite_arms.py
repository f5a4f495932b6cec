"""robosuite's arms as gymnasium environments: the robot suite a shared action vocabulary can transfer across.

The same task (Lift, Stack, ...) under six arms (Panda, Sawyer, IIWA, Jaco, Kinova3, UR5e) and two controllers:
OSC_POSE, whose 7-d action (end-effector position delta, rotation delta, gripper) means the same for every arm,
and JOINT_POSITION (joint position deltas), the same bodies under a joint-space action. (robosuite 1.5.2's
JOINT_VELOCITY controller cannot be built: its constructor assigns a read-only property.) MimicGen, Mirage and Shadow use this suite to
move skills across arms; here it lets a world model pretrained on some arms be tested on one it never saw.

A card names its task, robot and controller from the allow-lists in cards/schema.py (`RobosuiteSource`);
nothing is imported by a name from the card. robosuite's own cameras serve 64x64 badly (`agentview` cuts the
gripper off, `frontview` makes the robot tiny), so frames come from a free camera the card places, rendered
with MuJoCo's renderer directly: visual geoms only, no shadows (~41 frames/s at 64x64 on a CPU, against ~15
steps/s through robosuite's camera observations; ../shared/STACK.md).

Seeding: `reset(seed=s)` reseeds, in place, the one numpy Generator robosuite's object placement draws from, and
the model is loaded once (no hard reset), so an episode is a function of its seed alone (sims.replay steps it
again, tests/test_robosuite_arms.py checks it). The behaviour policy (`behaviour_policy`) mixes
scripted reach / grasp / lift phases with noise, as MimicGen's source demonstrations are, with smooth random
end-effector motion; under the joint controller it is smooth random joint motion pulled back towards the arm's
home pose, so the arm stays in view.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
from collections.abc import Callable

import numpy as np

from unified_action.errors import DataError

TASKS = ("Lift", "Stack", "PickPlaceCan", "Door")
ROBOTS = ("Panda", "Sawyer", "IIWA", "Jaco", "Kinova3", "UR5e")
CONTROLLERS = ("OSC_POSE", "JOINT_POSITION")
# where the object the scripted phases reach for lives, per task (an observation key of robosuite's)
_TARGET = {"Lift": "cube_pos", "Stack": "cubeA_pos", "PickPlaceCan": "Can_pos", "Door": "handle_pos"}
# the workspace the random motion stays in (world frame, m; the table top is at z = 0.8)
_LOW, _HIGH = np.array([-0.3, -0.3, 0.84]), np.array([0.2, 0.3, 1.25])


def _import_robosuite():
    """robosuite, imported quietly: its console logger prints a dozen lines at import (a missing private macro
    file, optional packages) and at every env made. A `macros_private` module is robosuite's own way to set its
    macros; one made here keeps its logger at ERROR and its rendering off the GPU path."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    if "robosuite.macros_private" not in sys.modules:
        private = types.ModuleType("robosuite.macros_private")
        private.CONSOLE_LOGGING_LEVEL = "ERROR"
        private.FILE_LOGGING_LEVEL = None
        private.MUJOCO_GPU_RENDERING = False
        sys.modules["robosuite.macros_private"] = private
    try:
        import robosuite
    except ImportError as e:
        raise DataError(f"robosuite cards need robosuite 1.5.2: `make setup` installs it (pip install --no-deps "
                        f"robosuite==1.5.2; see pyproject.toml's sims extra) ({e})") from None
    return robosuite


def _controller_config(robot: str, controller: str) -> dict:
    from robosuite.controllers import load_composite_controller_config, load_part_controller_config

    config = load_composite_controller_config(controller="BASIC", robot=robot)
    if controller != "OSC_POSE":  # the arm part swapped for the joint-space controller; its gripper kept
        arm = load_part_controller_config(default_controller=controller)
        arm["gripper"] = config["body_parts"]["right"].get("gripper", {"type": "GRIP"})
        config["body_parts"]["right"] = arm
    return config


class RobosuiteArm:
    """One robosuite task and arm behind gymnasium's interface (reset(seed) -> (obs, info), step, render, close),
    so that sims.record_episodes and sims.replay treat it as any other simulator card."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task: str, robot: str, controller: str, *, control_freq: int, width: int, height: int,
                 lookat: tuple[float, float, float], distance: float, azimuth: float, elevation: float):
        from gymnasium import spaces

        if task not in TASKS or robot not in ROBOTS or controller not in CONTROLLERS:  # the card schema checks first
            raise ValueError(f"robosuite: {task}/{robot}/{controller} is not on the allow-list")
        suite = _import_robosuite()
        self.task, self.robot, self.controller = task, robot, controller
        self.env = suite.make(task, robots=robot, controller_configs=_controller_config(robot, controller),
                              has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False,
                              control_freq=control_freq, horizon=10**6, ignore_done=True, reward_shaping=True,
                              hard_reset=False, initialization_noise=None, seed=0)
        low, high = self.env.action_spec
        self.action_space = spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self.width, self.height = width, height
        self.camera = (tuple(lookat), distance, azimuth, elevation)
        self._renderer = None
        self._obs: dict | None = None
        self.unwrapped = self

    # gymnasium's interface -------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, options=None):
        if seed is not None:
            # robosuite's placement sampler and robots hold the env's one Generator: reseed it in place
            self.env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        self._obs = self.env.reset()
        return self._observation(), {}

    def step(self, action):
        self._obs, reward, _, info = self.env.step(np.asarray(action, dtype=np.float64))
        return self._observation(), float(reward), False, False, info

    def render(self) -> np.ndarray:
        import mujoco

        if self._renderer is None:
            model = self.env.sim.model._model
            model.vis.quality.shadowsize = 0  # the shadow map dominates a CPU render (Mesa llvmpipe)
            model.vis.quality.offsamples = 0
            self._renderer = mujoco.Renderer(model, self.height, self.width)
            cam = mujoco.MjvCamera()
            cam.type = mujoco.mjtCamera.mjCAMERA_FREE
            (cam.lookat[:], cam.distance, cam.azimuth, cam.elevation) = self.camera
            option = mujoco.MjvOption()
            option.geomgroup[:] = 0
            option.geomgroup[1] = 1  # visual meshes only: group 0 (collision boxes) would cover the robot
            self._cam, self._option = cam, option
        self._renderer.update_scene(self.env.sim.data._data, self._cam, self._option)
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            with contextlib.suppress(Exception):  # at interpreter exit EGL may be gone already; the context dies with us
                self._renderer.close()
            self._renderer = None
        self.env.close()

    # what the behaviour policy and the card read ---------------------------------------------------------------
    def _observation(self) -> dict[str, np.ndarray]:
        o = self._obs
        return {"eef_pos": o["robot0_eef_pos"].astype(np.float32), "eef_quat": o["robot0_eef_quat"].astype(np.float32),
                "target_pos": o[_TARGET[self.task]].astype(np.float32)}

    def _joint_pos(self) -> np.ndarray:
        r = self.env.robots[0]
        return np.asarray(self.env.sim.data.qpos[r._ref_joint_pos_indexes], dtype=np.float64)

    def behaviour_policy(self, seed: int) -> Callable[[], np.ndarray]:
        """The seeded policy that drives episode `seed` (sims._start asks the env for it, as it asks gymnasium's
        action space for the generic ones). Call it after reset: it reads the arm's state at every step."""
        rng = np.random.default_rng(seed)
        if self.controller == "OSC_POSE":
            return _ScriptedOrSmooth(self, rng)
        return _SmoothJoints(self, rng)


class _OU:
    """Ornstein-Uhlenbeck noise in [-1, 1]: motion that persists for a few frames, so it shows."""

    def __init__(self, rng: np.random.Generator, dim: int, theta: float = 0.15, sigma: float = 0.4):
        self.rng, self.theta, self.sigma = rng, theta, sigma
        self.x = rng.uniform(-0.5, 0.5, dim)

    def __call__(self) -> np.ndarray:
        self.x = np.clip(self.x - self.theta * self.x + self.sigma * self.rng.standard_normal(self.x.shape), -1, 1)
        return self.x


class _ScriptedOrSmooth:
    """Per episode, either scripted phases (reach above the object, descend, close, lift, then carry it to random
    waypoints; each target jittered, OU noise on every command) or smooth random end-effector motion with the
    gripper opening and closing at random. Both keep the hand inside the workspace box so it stays in view."""

    def __init__(self, arm: RobosuiteArm, rng: np.random.Generator):
        self.arm, self.rng = arm, rng
        self.scripted = rng.random() < 0.6
        self.noise, self.turn = _OU(rng, 3, sigma=0.3 if self.scripted else 0.5), _OU(rng, 3, sigma=0.15)
        self.t, self.grip = 0, -1.0
        self.jitter = rng.normal(0.0, 0.015, 3)
        self.waypoint = rng.uniform(_LOW, _HIGH)

    def _towards(self, target: np.ndarray, eef: np.ndarray, gain: float = 0.7) -> np.ndarray:
        return np.clip((target - eef) / 0.05 * gain, -1, 1)  # OSC_POSE: an action of 1 asks for 5 cm this step

    def __call__(self) -> np.ndarray:
        obs = self.arm._observation()
        eef, obj = obs["eef_pos"].astype(np.float64), obs["target_pos"].astype(np.float64)
        self.t += 1
        if self.scripted:
            above = obj + self.jitter + [0, 0, 0.1]
            if self.t < 25:  # reach above the object
                pos, self.grip = self._towards(above, eef), -1.0
            elif self.t < 40:  # descend onto it
                pos = self._towards(obj + self.jitter * [1, 1, 0], eef)
            elif self.t < 48:  # close
                pos, self.grip = np.zeros(3), 1.0
            elif self.t < 65:  # lift
                pos = self._towards(above + [0, 0, 0.15], eef)
            else:  # carry it around
                if np.linalg.norm(self.waypoint - eef) < 0.04 or self.rng.random() < 0.03:
                    self.waypoint = self.rng.uniform(_LOW, _HIGH)
                pos = self._towards(self.waypoint, eef, gain=0.4)
                if self.rng.random() < 0.02:
                    self.grip = -self.grip
            pos = np.clip(pos + 0.3 * self.noise(), -1, 1)
        else:
            pos = self.noise()
            outside = np.clip(_LOW - eef, 0, None) - np.clip(eef - _HIGH, 0, None)  # pull back into view
            pos = np.clip(pos + outside / 0.05, -1, 1)
            if self.rng.random() < 0.05:
                self.grip = -self.grip
        rot = 0.3 * self.turn()  # small wrist turns: the rotation slots vary, the grasp mostly survives
        return np.concatenate([pos, rot, [self.grip]]).astype(np.float32)


class _SmoothJoints:
    """Smooth random joint position deltas, pulled back towards the home pose (the arm would otherwise fold into the
    table or out of view), and the gripper opening and closing at random."""

    def __init__(self, arm: RobosuiteArm, rng: np.random.Generator):
        self.arm, self.rng = arm, rng
        self.home = arm._joint_pos()
        self.noise = _OU(rng, len(self.home), sigma=0.5)
        self.grip = -1.0

    def __call__(self) -> np.ndarray:
        q = self.arm._joint_pos()
        v = np.clip(self.noise() + 2.0 * (self.home - q), -1, 1)  # an action of 1 asks for 0.05 rad this step
        if self.rng.random() < 0.05:
            self.grip = -self.grip
        return np.concatenate([v, [self.grip]]).astype(np.float32)
