"""The simulator's own frames under the other actions: what a counterfactual rollout is judged against.

dPSNR (rollouts.py) says whether a rollout changes with its actions, not whether it changes the way the world
would. For a dataset recorded from a simulator card (`uact data record`: episode i from seed `seed + i`), each
clip's episode is stepped again (sims.replay) under its own recorded actions to the clip's last context frame,
then under the actions of the clip whose actions the counterfactual rollout used, and its frames at the clip's
frame stride go through the dataset's crop and resize and then the loader's, as the clip's own frames did.
A clip counts only when the replay reproduces its last context frame (a simulator that is not deterministic
under replay, or a dataset recorded otherwise, gets no truth rather than a wrong one).

Per clip and horizon step, beside the model's rollout under the other actions (`cf`):
- cf_psnr: PSNR(cf, the simulator under the other actions); cf_baseline_psnr: copy-last against that truth;
- action_accuracy: 1 where cf is closer (MSE) to the simulator under the other actions than to the real future,
  0 where not, undefined where the two truths are nearly the same (PSNR >= TRUTHS_DIFFER_DB): a model that ignores
  its actions scores ~0.5.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from unified_action.cards.schema import SIMULATOR_SOURCES
from unified_action.data.dataset import ShardDataset
from unified_action.data.frames import DEFAULT_ASPECT, resize_frames
from unified_action.errors import DataError
from unified_action.evaluation import metrics as M

TRUTHS_DIFFER_DB = 40.0  # the two truths must differ by more than this (PSNR below it) for a clip step to count
REPRODUCED_GREY = 2.0  # mean |replayed - stored| of the last context frame, grey levels: lossy codecs stay under it


def has_simulator(ds: ShardDataset) -> bool:
    """Whether the dataset was recorded from its card's simulator (and so can be replayed)."""
    return ds.manifest.get("source", {}).get("kind") == "sim" and ds.card.header.source.type in SIMULATOR_SOURCES


def _split_key(key: str) -> tuple[int, int]:
    """'dataset/episode@start' -> (episode, start step)."""
    ep, start = key.rsplit("/", 1)[-1].split("@", 1)
    return int(ep), int(start)


def _native_actions(ds: ShardDataset, episodes: set[int]) -> dict[int, np.ndarray]:
    """Native actions [T, native_dim] (the card's fields flattened in order: every agent's of a scene) of the given
    episode ids (manifest ids), read from the shards."""
    fields = ds.card.header.action
    out = {}
    for ep in ds.iter_episodes():
        if ep.index in episodes:
            T = len(ep.actions[fields[0].path])
            out[ep.index] = np.concatenate([ep.actions[f.path].reshape(T, -1) for f in fields], axis=1)
    return out


_CACHE: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}
CACHED_TRUTHS = 16  # the truths of the last datasets evaluated in this process (~1 MB each at 64x64)


def simulator_truth(ds: ShardDataset, keys: list[str], partner_keys: list[str | None], last_context: np.ndarray,
                    context_frames: int, stride: int, horizon: int, image_size: tuple[int, int],
                    aspect: str = DEFAULT_ASPECT, swap_agent: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """-> (truth uint8 [N, H, h, w, 3] under each clip's partner actions, has_truth bool [N], notes).
    `last_context`: each clip's last context frame as the loader gave it [N, h, w, 3]: the replay's check.
    `swap_agent`: of a scene with several agents, only this agent takes the partner's actions, the others their own.

    The truth depends on the dataset and these arguments alone, not on a model: a second model evaluated on the same
    clips (the demo's pretrained and fine-tuned models) gets the frames the first one's replays rendered (robosuite
    replays were ~40% of the demo's evaluation)."""
    manifest = Path(ds.root) / "manifest.json"
    key = hashlib.sha256(json.dumps([str(ds.root), manifest.stat().st_mtime_ns if manifest.exists() else 0, keys,
                                     partner_keys, context_frames, stride, horizon, list(image_size), aspect, swap_agent]
                                    ).encode() + np.ascontiguousarray(last_context).tobytes()).hexdigest()
    if key not in _CACHE:
        if len(_CACHE) >= CACHED_TRUTHS:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = _replayed_truth(ds, keys, partner_keys, last_context, context_frames, stride, horizon,
                                      image_size, aspect, swap_agent)
    truth, ok, notes = _CACHE[key]
    return truth.copy(), ok.copy(), list(notes)


def _replayed_truth(ds: ShardDataset, keys: list[str], partner_keys: list[str | None], last_context: np.ndarray,
                    context_frames: int, stride: int, horizon: int, image_size: tuple[int, int],
                    aspect: str, swap_agent: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from unified_action.sims import Replayer

    src = ds.manifest.get("source", {})
    seed, style = int(src.get("seed", 0)), str(src.get("style", "smooth"))
    settings = ds.manifest.get("settings") or {}
    stored = tuple(settings["image_size"]) if settings.get("image_size") else None
    stored_aspect = settings.get("aspect", DEFAULT_ASPECT)
    cam = ds.card.header.cameras[0]  # the loader's default camera
    N, offset = len(keys), (context_frames - 1) * stride  # steps from a clip's first frame to its last context frame
    every = ds.frame_every
    if stride % every:  # the loader refuses such a dataset; a caller passing its own stride must match it too
        raise DataError(f"{ds.root}: simulator truth: frame stride {stride} is not a multiple of frame_every {every}")
    truth = np.zeros((N, horizon, *last_context.shape[1:]), np.uint8)
    ok = np.zeros(N, bool)
    wanted = {_split_key(k)[0] for k in keys} | {_split_key(p)[0] for p in partner_keys if p is not None}
    actions = _native_actions(ds, wanted)
    unreproduced = ended = 0
    with Replayer(ds.card) as replay:  # one simulator for every clip of the dataset
        for i, (key, partner) in enumerate(zip(keys, partner_keys)):
            if partner is None:
                continue
            (ep, start), (pep, pstart) = _split_key(key), _split_key(partner)
            k = start + offset  # own actions up to the last context frame, then the partner's from its last context frame
            then = actions[pep][pstart + offset: pstart + offset + horizon * stride]
            if swap_agent is not None:
                own = actions[ep][k: k + horizon * stride].copy()
                cols = ds.card.mapping.agent_native_columns(swap_agent)
                if len(own) == len(then):
                    own[:, cols] = then[:, cols]
                then = own
            if len(then) < horizon * stride:
                ended += 1
                continue
            picks = [k + h * stride for h in range(horizon + 1)]  # only these frames are rendered
            frames = replay(seed + ep, actions[ep][:k], then=then, style=style, at=picks)[cam.name]
            if len(frames) < len(picks):
                ended += 1
                continue
            shown = resize_frames(resize_frames(cam.cropped(frames), stored, stored_aspect), image_size, aspect)
            if np.abs(shown[0].astype(np.float32) - last_context[i].astype(np.float32)).mean() > REPRODUCED_GREY:
                unreproduced += 1
                continue
            truth[i], ok[i] = shown[1:], True
    notes = []
    if unreproduced:
        notes.append(f"simulator truth: the replay did not reproduce the last context frame of {unreproduced} clip(s); "
                     f"they have none")
    if ended:
        notes.append(f"simulator truth: none for {ended} clip(s) whose episode or other actions end within the horizon")
    return truth, ok, notes


def truth_metrics(real: np.ndarray, cf: np.ndarray, truth: np.ndarray, last: np.ndarray) -> dict[str, np.ndarray]:
    """Per clip and step [N, H]: cf_psnr, cf_baseline_psnr, action_accuracy (NaN where the truths barely differ)."""
    def mse(a, b):
        return ((a.astype(np.float32) - b.astype(np.float32)) ** 2).mean(axis=(-3, -2, -1))

    differ = M.psnr(real, truth) < TRUTHS_DIFFER_DB
    closer = mse(cf, truth) < mse(cf, real)
    return {"cf_psnr": M.psnr(truth, cf), "cf_baseline_psnr": M.psnr(truth, last),
            "action_accuracy": np.where(differ, closer.astype(np.float64), np.nan)}
