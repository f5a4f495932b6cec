"""The simulator beside the model: the episode the session started from, continued live under the same actions.

For a dataset recorded from its card's simulator (evaluation/truth.py `has_simulator`), the clip's episode is reset
from its seed and stepped through its recorded actions to the last context frame (sims.LiveSim), checked against
that frame as the loader gave it (truth.py's REPRODUCED_GREY), then stepped with each frame's native chunk; its
camera frame goes through the dataset's crop and resize and the loader's, as recorded frames do. Simulators that
render through EGL (MuJoCo) are bound to the thread that opened them, so every call runs on one thread of its own.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from unified_action.data.dataset import open_dataset
from unified_action.data.frames import DEFAULT_ASPECT, resize_frames
from unified_action.errors import DataError


class SimView:
    """`frame` the simulator's start (uint8 [h, w, 3]); `step(native_chunk)` -> its next frame, or None once ended."""

    def __init__(self, path, key: str, context_frames: int, stride: int, last_context: np.ndarray, aspect: str):
        from unified_action.evaluation.truth import REPRODUCED_GREY, _native_actions, _split_key, has_simulator
        from unified_action.sims import LiveSim

        ds = open_dataset(path)
        if not has_simulator(ds):
            raise DataError(f"{ds.root}: not recorded from its card's simulator: no simulator view")
        src = ds.manifest.get("source", {})
        settings = ds.manifest.get("settings") or {}
        self.stored = tuple(settings["image_size"]) if settings.get("image_size") else None
        self.stored_aspect = settings.get("aspect", DEFAULT_ASPECT)
        self.size, self.aspect, self.cam = tuple(last_context.shape[:2]), aspect, ds.card.header.cameras[0]
        ep, start = _split_key(key)
        actions = _native_actions(ds, {ep})[ep][:start + (context_frames - 1) * stride]
        self._episode = (int(src.get("seed", 0)) + ep, actions, str(src.get("style", "smooth")))
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="uact-sim")  # one thread: EGL contexts are per thread
        try:
            self.sim = self.pool.submit(LiveSim, ds.card).result()
            self.restart()
        except BaseException:
            self.close()
            raise
        if np.abs(self.frame.astype(np.float32) - last_context.astype(np.float32)).mean() > REPRODUCED_GREY:
            self.close()
            raise DataError(f"{ds.root}: the simulator's replay of {key} does not reproduce its last context frame")

    def restart(self) -> None:
        """Back to the last context frame."""
        self.frame = self._shown(self.pool.submit(self.sim.start, *self._episode).result())

    def _shown(self, frames: dict) -> np.ndarray:
        f = self.cam.cropped(frames[self.cam.name][None])
        return resize_frames(resize_frames(f, self.stored, self.stored_aspect), self.size, self.aspect)[0]

    def step(self, native_chunk: np.ndarray) -> np.ndarray | None:
        def run():
            *head, last = np.asarray(native_chunk)
            for a in head:
                self.sim.step(a, render=False)
            frames = self.sim.step(last)
            return None if self.sim.ended else frames

        frames = self.pool.submit(run).result()
        if frames is not None:
            self.frame = self._shown(frames)
        return self.frame if frames is not None else None

    def close(self) -> None:
        sim = getattr(self, "sim", None)
        if sim is not None:
            self.pool.submit(sim.close).result()
            self.sim = None
        self.pool.shutdown(wait=False)
