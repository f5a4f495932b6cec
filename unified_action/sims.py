"""Real simulators named by data cards, made headless, and episodes recorded from them.

A card names a gymnasium id; the module that registers it comes from this fixed allow-list, never from
the card, so reading a card can't make us import arbitrary code. A robosuite card names a task, an arm and a
controller from the schema's allow-lists (robosuite_arms.py makes them look like a gymnasium env).

Where a simulator card's paths point (the generic adapter for any gymnasium env that renders rgb_array):
  camera key  'render'              env.render() (the env is made with render_mode='rgb_array')
              'observation'         the observation itself is the image (Atari, CarRacing)
              'observation/a/b'     obs['a']['b'] of a dict observation (gym-aloha, gym-pusht)
  proprio     'observation' (the whole observation, flattened) or 'observation/a/b' likewise.
Step t holds the observation before action t, the action, and the reward that followed (the RLDS
convention); the observation after the last action is not kept.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Iterator

import numpy as np

from unified_action.cards import DataCard
from unified_action.cards.schema import ENV_MODULES, SIMULATOR_SOURCES
from unified_action.data.episode import Episode
from unified_action.errors import DataError
from unified_action.policies import policy_for_space


def make_env(card: DataCard, render_mode: str | None = "rgb_array"):
    src = card.header.source
    if src.type not in SIMULATOR_SOURCES:
        raise DataError(f"{card.name}: source type '{src.type}' is not a simulator")
    if src.type == "robosuite":
        return _robosuite_env(card)
    if src.type == "pettingzoo":
        return _pettingzoo_scene(card)
    if ":" in src.env_id:  # validated by the card schema too: gymnasium would import the module before the ':'
        raise DataError(f"{card.name}: source.env_id: '{src.env_id}' has a module prefix; ids come from an allow-list")
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless MuJoCo rendering
    import gymnasium as gym

    module = next((m for prefix, m in ENV_MODULES.items() if src.env_id.startswith(prefix)), None)
    if module is not None:
        mod = importlib.import_module(module)
        if module == "ale_py":
            gym.register_envs(mod)
    kwargs = dict(src.env_kwargs)
    if module == "highway_env" and render_mode is not None and os.environ.get("SDL_VIDEODRIVER") == "dummy":
        # highway-env renders offscreen on its own, and turns its viewer off (black frames) under this value
        del os.environ["SDL_VIDEODRIVER"]
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    # gymnasium's passive checker warns on every worker about spaces the simulator itself declares (Meta-World's
    # observation bounds): nothing a user can act on; the recorded frames and actions are validated by our own code
    kwargs.setdefault("disable_env_checker", True)
    return gym.make(src.env_id, **kwargs)


def simulator_name(card: DataCard) -> str:
    """What a simulator card rolls out, for people: 'ALE/Pong-v5', 'robosuite Lift UR5e OSC_POSE'."""
    src = card.header.source
    if src.type == "pettingzoo":
        return f"pettingzoo {src.scene} {dict(src.scene_kwargs)}" if src.scene_kwargs else f"pettingzoo {src.scene}"
    return f"robosuite {src.task} {src.robot} {src.controller}" if src.type == "robosuite" else src.env_id


def _pettingzoo_scene(card: DataCard):
    """An allow-listed PettingZoo scene (pettingzoo_scenes.py) whose agents act as one env: the joint action is the
    card's agents' fields in order, which must be the scene's agents in the scene's order."""
    from unified_action.pettingzoo_scenes import PettingZooScene

    src, cam = card.header.source, card.header.cameras[0] if card.header.cameras else None
    h, w = (cam.height, cam.width) if cam is not None else (64, 64)
    try:
        scene = PettingZooScene(src.scene, dict(src.scene_kwargs), w, h, sticky_repeat=src.sticky_repeat)
    except ValueError as e:
        raise DataError(f"{card.name}: source: {e}") from None
    if scene.agents != card.header.agent_names:
        scene.close()
        raise DataError(f"{card.name}: agents: {list(card.header.agent_names)}, but {src.scene} has agents "
                        f"{list(scene.agents)} (the card lists them in the scene's order)")
    return scene


def _robosuite_env(card: DataCard):
    """A robosuite task and arm (allow-listed by the card schema) behind gymnasium's interface; its camera is the
    card's free camera at the card camera's size."""
    from unified_action.robosuite_arms import RobosuiteArm

    src, cam = card.header.source, card.header.cameras[0] if card.header.cameras else None
    h, w = (cam.height, cam.width) if cam is not None else (64, 64)
    return RobosuiteArm(src.task, src.robot, src.controller, control_freq=src.control_freq, width=w, height=h,
                        lookat=tuple(src.camera.lookat), distance=src.camera.distance, azimuth=src.camera.azimuth,
                        elevation=src.camera.elevation)


def _cheap_mujoco_rendering(env) -> None:
    """Turn off shadows and multisampling of MuJoCo envs: without a GPU (Mesa llvmpipe) the 4096² shadow map
    dominates, and a 64x64 Meta-World frame goes from ~7 to ~34 per second. Must run before the first render."""
    u = env.unwrapped
    models = [getattr(u, "model", None)]
    physics = getattr(getattr(u, "_env", None), "physics", None)  # dm_control-based envs (gym-aloha)
    if physics is not None:
        models.append(physics.model.ptr)
    for m in models:
        if m is not None and hasattr(m, "vis"):
            m.vis.quality.shadowsize = 0
            m.vis.quality.offsamples = 0


def _at(obs, path: str, what: str, card: DataCard):
    """obs at a card path 'observation[/a/b]'."""
    value = obs
    for k in path.split("/")[1:]:
        if not isinstance(value, dict) or k not in value:
            have = sorted(value) if isinstance(value, dict) else type(value).__name__
            raise DataError(f"{card.name}: {what} '{path}': the observation has no '{k}' (has {have})")
        value = value[k]
    return np.asarray(value)


def _open(card: DataCard):
    """The card's env made for recording (rendering if a camera reads env.render()), and its one action field."""
    renders = any(c.key == "render" for c in card.header.cameras)
    for c in card.header.cameras:
        if c.key != "render" and c.key != "observation" and not c.key.startswith("observation/"):
            raise DataError(f"{card.name}: cameras.{c.name}.key: '{c.key}', expected 'render', 'observation' or 'observation/...'")
    agents = card.header.agents  # only a pettingzoo card has them (card.check_semantics)
    if len(card.header.action) != (len(agents) if agents else 1):
        want = "one action field per agent" if agents else "one action field"
        raise DataError(f"{card.name}: action: a simulator card has {want}, found {len(card.header.action)}")
    env = make_env(card, render_mode="rgb_array" if renders else None)
    _cheap_mujoco_rendering(env)
    return env, tuple(card.header.action)


def as_recorded(action, fields) -> list[np.ndarray]:
    """A (joint) action as a dataset stores it: one array per card field (one per agent of a scene), each in the card's
    shape and dtype (a policy's float64 becomes the card's float32; the simulator is stepped with these values, not
    the policy's, so the stored actions are the ones taken)."""
    flat, out, at = np.asarray(action).reshape(-1), [], 0
    for f in fields:
        out.append(flat[at: at + f.size].reshape(f.shape).astype(f.dtype))
        at += f.size
    if at != flat.size:
        raise DataError(f"an action of {flat.size} values for fields of {at} ({', '.join(f.path for f in fields)})")
    return out


def _env_action(env, parts: list[np.ndarray]):
    """Stored actions in the form the env's action space takes (a Discrete space: a plain int; a scene: the agents'
    values concatenated)."""
    action = parts[0] if len(parts) == 1 else np.concatenate([p.reshape(-1) for p in parts])
    shape = env.action_space.shape
    return action.reshape(shape) if shape else action.item()


def _behaviour(env, card: DataCard, seed: int, style: str, stepped: bool = True):
    """Episode `seed`'s behaviour policy: the env's own where it has one and is being stepped (robosuite's arms
    script reach and grasp from the arm's state), else a generic one for its action space."""
    own = getattr(env.unwrapped, "behaviour_policy", None) if stepped else None
    return own(seed) if own is not None else policy_for_space(env.action_space, seed, style, card.header.source.sticky_repeat)


def _start(env, card: DataCard, seed: int, style: str):
    """Reset to episode `seed`'s first recorded step -> (observation, the episode's behaviour policy)."""
    # An episode must be a function of its seed alone, whatever this process stepped before (a recording part holds
    # many episodes; a replay may follow another). Meta-World's MT1 draws its task in a wrapper from the env's RNG
    # BEFORE passing the seed on, and its SawyerXYZEnv ignores reset's seed ("use seed() instead"): so the env's RNG
    # is seeded here first, and reset twice (wrappers that draw before seeding draw from a seeded RNG the second time).
    if hasattr(type(env.unwrapped), "np_random"):
        env.unwrapped.np_random = np.random.default_rng(seed)
    env.reset(seed=seed)
    obs, _ = env.reset(seed=seed)
    policy = _behaviour(env, card, seed, style)
    for _ in range(card.header.source.warmup_steps):  # not recorded: e.g. a camera animation no action affects
        obs, *_ = env.step(policy())
    return obs, policy


def _frames(env, obs, card: DataCard) -> dict[str, np.ndarray]:
    """What each card camera shows now."""
    out = {}
    for c in card.header.cameras:
        frame = env.render() if c.key == "render" else _at(obs, c.key, "camera", card)
        out[c.name] = frame[::-1] if c.flip_vertical else frame
    return out


def record_episodes(card: DataCard, indices: Iterable[int], steps: int, seed: int = 0, style: str = "smooth") -> Iterator[Episode]:
    """Roll out the card's simulator headless and yield one Episode per index: frames of every card camera,
    native actions from a seeded behaviour policy, proprio, reward, flags and the card's instruction.

    Frames are rendered and kept only at steps 0, k, 2k, ... for the card's source.frame_every k (Episode.frame_every):
    the loader shows no others, and rendering is most of a MuJoCo recording's time. Everything else is every step.

    Episode i uses seed `seed + i` for both the env reset and the policy, so any split of the indices over
    processes records the same episodes, and `replay` can step it again under other actions."""
    env, fields = _open(card)
    instruction = card.header.instruction.text if card.header.instruction and card.header.instruction.text else ""
    every = card.header.frame_every
    try:
        for i in indices:
            obs, policy = _start(env, card, seed + i, style)
            frames = {c.name: [] for c in card.header.cameras}
            proprio = {p.path: [] for p in card.header.proprio}
            actions, rewards, terminal = [], [], False
            for t in range(steps):
                for name, frame in (_frames(env, obs, card) if t % every == 0 else {}).items():
                    frames[name].append(frame)
                for p in card.header.proprio:
                    proprio[p.path].append(_at(obs, p.path, "proprio", card).astype(np.float32))
                a = as_recorded(policy(), fields)  # stepped as stored, so `replay` reproduces the frames exactly
                actions.append(a)
                obs, reward, terminated, truncated, _ = env.step(_env_action(env, a))
                rewards.append(float(reward))
                if terminated or truncated:
                    terminal = bool(terminated)
                    break
            T = len(actions)
            first, last, is_terminal = np.zeros(T, bool), np.zeros(T, bool), np.zeros(T, bool)
            first[0], last[-1], is_terminal[-1] = True, True, terminal
            yield Episode(
                card=card.name, index=i,
                frames={k: np.stack(v).astype(np.uint8) for k, v in frames.items()},
                actions={f.path: np.stack([a[k] for a in actions]).reshape(T, *f.shape).astype(f.dtype)
                         for k, f in enumerate(fields)},
                proprio={k: np.stack(v) for k, v in proprio.items()},
                reward=np.asarray(rewards, np.float32), is_first=first, is_last=last, is_terminal=is_terminal,
                instruction=instruction, source=f"{simulator_name(card)} seed {seed + i}", frame_every=every,
            )
    finally:
        env.close()


class LiveSim:
    """One recorded episode stepped again from its seed, one native action at a time: `reset(seed)`, then
    `step(action)`; `frames()` is what each camera shows now; `ended` once the env ends the episode (terminated or
    truncated: later steps do nothing). Replayer (evaluation's truth) and `uact play`'s simulator view use it."""

    def __init__(self, card: DataCard):
        self.card = card
        self.env, self.fields = _open(card)
        self.obs = None
        self.ended = False

    def close(self) -> None:
        self.env.close()

    def reset(self, seed: int, style: str = "smooth") -> None:
        self.obs, _ = _start(self.env, self.card, seed, style)
        self.ended = False

    def frames(self) -> dict[str, np.ndarray]:
        return _frames(self.env, self.obs, self.card)

    def step(self, action, render: bool = True) -> dict[str, np.ndarray] | None:
        if not self.ended:
            self.obs, _, terminated, truncated, _ = self.env.step(_env_action(self.env, as_recorded(action, self.fields)))
            self.ended = bool(terminated or truncated)
        return self.frames() if render else None

    def start(self, seed: int, actions: np.ndarray, style: str = "smooth") -> dict[str, np.ndarray]:
        """Reset to episode `seed` and step it through its recorded `actions` -> the frames after the last one."""
        self.reset(seed, style)
        for a in np.asarray(actions):
            self.step(a, render=False)
            if self.ended:
                raise DataError(f"{self.card.name}: episode of seed {seed} ended within its recorded actions")
        return self.frames()


class Replayer:
    """Episodes stepped again from their seeds in one simulator (`with Replayer(card) as replay: replay(seed, ...)`):
    opening robosuite's arm takes seconds, so an evaluation replaying many clips of one dataset opens it once.
    Each call starts from `reset(seed)`, and an episode depends on its seed alone (tests/test_sims.py,
    tests/test_robosuite_arms.py), so the order of calls does not matter."""

    def __init__(self, card: DataCard):
        self.live = LiveSim(card)

    def __enter__(self) -> Replayer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.live.close()

    def __call__(self, seed: int, actions: np.ndarray, then: np.ndarray | None = None, style: str = "smooth",
                 at: Iterable[int] | None = None) -> dict[str, np.ndarray]:
        """The simulator's own frames for an episode recorded with seed `seed` (record_episodes: `seed + i`, `style` as
        recorded: its warm-up steps come from the policy) driven by the native `actions` [T, ...] from its start, then
        by `then` [H, ...] if given -> camera -> uint8 [T + H + 1, ...]: frame t is what the camera showed before
        action t, the last one what it showed after the last action. With `then`, the frames from T + 1 on are the
        truth under other actions (a counterfactual), which a world model's rollout under them is judged against.
        `at`: render only the frames of these steps (ascending), in that order: rendering costs more than stepping
        (robosuite: ~25 ms a frame, ~6 ms a step). An episode that ends early (terminated or truncated) returns the
        frames up to its end."""
        live, cams = self.live, self.live.card.header.cameras
        steps = [*np.asarray(actions), *(np.asarray(then) if then is not None else [])]
        wanted = None if at is None else set(at)
        live.reset(seed, style)
        frames = {c.name: [] for c in cams}
        for t in range(len(steps) + 1):
            if wanted is None or t in wanted:
                for name, frame in live.frames().items():
                    frames[name].append(frame)
            if t == len(steps) or live.ended:
                break
            live.step(steps[t], render=False)
        empty = {c.name: np.zeros((0, c.height, c.width, 3), np.uint8) for c in cams}
        return {k: np.stack(v).astype(np.uint8) if v else empty[k] for k, v in frames.items()}


def replay(card: DataCard, seed: int, actions: np.ndarray, then: np.ndarray | None = None,
           style: str = "smooth", at: Iterable[int] | None = None) -> dict[str, np.ndarray]:
    """One episode stepped again in a simulator of its own (Replayer's call, which says what comes back)."""
    with Replayer(card) as r:
        return r(seed, actions, then, style, at)


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
            if step_env:
                env.reset(seed=seed + e)
            policy = _behaviour(env, card, seed + e, style, stepped=step_env)
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
