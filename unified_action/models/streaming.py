"""A rollout driven one frame at a time: real context frames first, then one action chunk per call, forever.

`rollout` (sampling.py) takes every action up front and a fixed horizon; a person driving the model decides
the next action only after seeing the last frame. `StreamingSession` is the same sampler cut at frame
boundaries: the context's known changes go into the KV caches once, then each `step(chunk)` denoises one frame
under that chunk, commits its clean K/V and returns it. The caches are rings of the temporal window
(world_model.KVCache), so the window slides without end and memory stays constant however long one plays.

It equals `rollout` frame for frame for the same actions and the same noise (tests/models/test_streaming.py):
the noise is one randn per frame, in frame order, from `generator` (or torch's global RNG, as rollout draws it);
each frame's conditioning is computed from its own chunk and the one before it (the action history), which is
all `WorldModel.conditioning` reads for that frame.

Classifier-free guidance (`guidance`, changeable between frames): the null-action stream keeps its own cache
from the start whenever `guidance_ready` (the default), so moving a slider mid-session needs no replay; at
guidance 1 its prediction is skipped and only its commit pass is paid.
"""

from __future__ import annotations

import torch

from unified_action.errors import UnifiedActionError
from unified_action.models.batch import ACTION_KEYS, BATCH_TENSORS, with_agents
from unified_action.models.sampling import _Stream, check_context, euler_times
from unified_action.models.world_model import Conditioning, WorldModel, to_pixels, to_uint8


class StreamingSession:
    """context uint8 [B, C, H, W, 3] real frames; context_actions: ACTION_KEYS each [B, >= C-1, P], the chunks
    between the context frames (chunk f: frame f -> f+1); embodiment, control_hz, frame_stride: one value or one
    per clip. Then `step(chunk)` -> the next frame, uint8 [B, H, W, 3]."""

    def __init__(self, model: WorldModel, context: torch.Tensor, context_actions: dict[str, torch.Tensor], embodiment,
                 control_hz, frame_stride=1, *, steps: int = 1, guidance: float = 1.0, min_change: float = 0.0,
                 generator: torch.Generator | None = None, guidance_ready: bool = True):
        B, C = check_context(model, context, "streaming")
        if steps < 1:
            raise UnifiedActionError(f"streaming: steps: expected >= 1, got {steps}")
        self.model, self.B, self.steps, self.min_change = model, B, steps, float(min_change)
        self.generator = generator
        self.guidance = guidance  # checked by the setter
        self.device = context.device
        self._times = euler_times(steps)
        self._static = {
            "embodiment": self._per_clip(embodiment, torch.int64, "embodiment"),
            "control_hz": self._per_clip(control_hz, torch.float32, "control_hz"),
            "frame_stride": self._per_clip(frame_stride, torch.int64, "frame_stride"),
        }
        chunks = self._check_chunks(context_actions, C - 1, "context_actions")
        self._null_on = guidance_ready or guidance != 1.0
        with torch.inference_mode():
            self._cond = _Stream(model, None, cache=True)  # type: ignore[arg-type]  # cond set per frame below
            self._null = _Stream(model, None, cache=True) if self._null_on else None  # type: ignore[arg-type]
            pix = to_pixels(context)
            self._last: dict[str, torch.Tensor] | None = None  # the previous chunk [B, 1, P]: the next frame's history
            for f in range(1, C):  # the context's known changes, each under the chunk that led to it
                chunk = {k: v[:, f - 1:f] for k, v in chunks.items()}
                self._set_conditioning(chunk)
                self._commit(pix[:, f - 1:f], pix[:, f:f + 1] - pix[:, f - 1:f], f)
            self._prev = pix[:, C - 1:C]
        self.position = C  # index of the next frame in the session (the context is frames 0..C-1)
        self.frames = 0  # frames generated so far

    # -------------------------------------------------------------------------------------------- settings
    @property
    def guidance(self) -> float:
        return self._guidance

    @guidance.setter
    def guidance(self, value: float) -> None:
        value = float(value)
        if not value >= 0:  # also refuses NaN
            raise UnifiedActionError(f"streaming: guidance: expected a number >= 0, got {value}")
        if value != 1.0 and getattr(self, "_null_on", True) is False:
            raise UnifiedActionError("streaming: guidance: this session was started without the null-action stream "
                                     "(guidance_ready=False); start it with guidance_ready=True to change guidance")
        self._guidance = value

    # -------------------------------------------------------------------------------------------- frames
    @torch.no_grad()
    def step(self, chunk: dict[str, torch.Tensor]) -> torch.Tensor:
        """chunk: ACTION_KEYS each [B, P] or [B, 1, P], the actions from the last frame to the next -> that frame,
        uint8 [B, H, W, 3]."""
        chunk = {k: (torch.as_tensor(v)[:, None] if torch.as_tensor(v).ndim == 2 else v) for k, v in chunk.items()}
        chunk = {k: v[:, :1] for k, v in self._check_chunks(chunk, 1, "chunk").items()}
        with torch.inference_mode():
            f = self.position
            self._set_conditioning(chunk)
            prev = self._prev
            x = torch.randn(self.B, 1, *prev.shape[2:], device=self.device, generator=self.generator)
            use_null = self._null is not None and self._guidance != 1.0
            for k in range(self.steps):
                t = self._times
                x0 = self._cond.predict(prev, x, t[k], f)
                if use_null:
                    x0_null = self._null.predict(prev, x, t[k], f)
                    x0 = x0_null + self._guidance * (x0 - x0_null)
                x = x0 + (t[k + 1] / t[k]) * (x - x0)  # Euler step of v = (x - x0) / t, as sampling.sample_frames
            if self.min_change > 0:  # predicted changes below min_change grey levels are no change (see rollout)
                x = torch.where(x.abs() < self.min_change / 127.5, torch.zeros_like(x), x)
            frame = to_pixels(to_uint8(prev + x))  # onto the 8-bit grid, as the frame the caller gets
            self._commit(prev, frame - prev, f)
            self._prev = frame
            self.position += 1
            self.frames += 1
            out = to_uint8(frame[:, 0])
        return out.clone()  # a normal tensor: callers may write into it outside inference mode

    # -------------------------------------------------------------------------------------------- internals
    def _commit(self, prev: torch.Tensor, delta: torch.Tensor, f: int) -> None:
        self._cond.commit(prev, delta, f)
        if self._null is not None:
            self._null.commit(prev, delta, f)

    def _set_conditioning(self, chunk: dict[str, torch.Tensor]) -> None:
        """The conditioning of the frame that follows `chunk`, with the previous chunk as its history (the first
        chunk of a session has none: the model's learned start, as a clip's first chunk in rollout)."""
        seq = {k: torch.cat(([self._last[k]] if self._last is not None else []) + [chunk[k], chunk[k]], 1)
               for k in ACTION_KEYS}  # the trailing copy stands for the chunk after the last frame, which is dropped
        batch = {**seq, **self._static}
        cond = self.model.conditioning(batch)
        self._cond.cond = _last_frame(cond)
        if self._null is not None:
            drop = torch.ones(self.B, dtype=torch.bool, device=self.device)
            self._null.cond = _last_frame(self.model.conditioning(batch, drop))
        self._last = chunk

    def _per_clip(self, x, dtype: torch.dtype, what: str) -> torch.Tensor:
        x = torch.as_tensor(x, device=self.device).to(dtype).reshape(-1)
        if x.numel() == 1:
            return x.expand(self.B)
        if x.numel() != self.B:
            raise UnifiedActionError(f"streaming: {what}: expected one value or {self.B} (one per clip), got {x.numel()}")
        return x

    def _check_chunks(self, actions: dict, n: int, what: str) -> dict[str, torch.Tensor]:
        actions = with_agents(actions)
        missing = [k for k in ACTION_KEYS if k not in actions]
        if missing:
            raise UnifiedActionError(f"streaming: {what}: missing {', '.join(missing)}")
        out = {}
        for k in ACTION_KEYS:
            a = torch.as_tensor(actions[k], device=self.device)
            if a.ndim != 3 or a.shape[0] != self.B or a.shape[1] < n:
                raise UnifiedActionError(f"streaming: {what}: {k}: expected [{self.B}, >= {n}, P], got {list(a.shape)}")
            out[k] = a.to(BATCH_TENSORS[k])
        return out


def _last_frame(cond: Conditioning) -> Conditioning:
    """The conditioning of the last predicted frame only, positioned as frame f by the cache's start."""
    n = cond.vector.shape[1]
    last = cond.frames(n - 1, n)
    return _Offset(last.vector, last.tokens, last.agent_actions)


class _Offset(Conditioning):
    """One frame's conditioning that answers `frames(f - 1, f)` (how _Stream asks for frame f) with itself."""

    def frames(self, lo: int, hi: int) -> Conditioning:
        return Conditioning(self.vector, self.tokens, self.agent_actions)
