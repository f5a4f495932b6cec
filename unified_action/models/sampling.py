"""Autoregressive few-step rollout: given real context frames and per-frame actions, generate frames one at a time.

Each new frame f is the previous frame plus a change that starts as Gaussian noise at t = 1 and is
integrated to t = 0 with `steps` Euler steps of the rectified flow (world_model.py predicts the clean
change x0; the velocity is (x_t - x0) / t). With one step the frame is the model's conditional mean, which
scores best in PSNR; more steps sample a sharper, more varied future. Every earlier frame is clean (t = 0),
as training's rollout regime (WorldModel.sample_noise_levels) shows it. Each finished frame is rounded to
the 8-bit grid (the frames the rollout returns) before the next one is conditioned on it.

Classifier-free guidance over actions (`guidance` > 1): the change predicted with the null action is
pushed away from, x0 = x0_null + guidance * (x0_actions - x0_null): what the actions add, amplified. It
costs a second pass per step, with its own KV cache.

KV cache. Temporal attention is causal and limited to a window of `max_frames - 1` frames, so a frame's
keys and values in every block depend only on frames at or before it. The cache (world_model.KVCache) keeps,
per block, the temporal K/V of the frames in the window; a denoising step runs only the new frame's tokens
through the blocks. Once the frame is done it is run once more at t = 0, and its clean K/V take the slot of
the frame that just left the window. Rotary positions are absolute frame indices, so a sliding window keeps
every distance within the trained range.

The uncached reference (`cache=False`) recomputes the whole history at every step with the same
sliding-window mask; it is what the cache must equal (tests/models/test_sampling.py).
"""

from __future__ import annotations

import torch

from unified_action.errors import UnifiedActionError
from unified_action.models.batch import ACTION_KEYS, BATCH_TENSORS, with_agents
from unified_action.models.world_model import Conditioning, KVCache, WorldModel, to_pixels, to_uint8


def euler_times(steps: int) -> list[float]:
    """Noise levels 1 = t_0 > t_1 > ... > t_steps = 0, evenly spaced (straight flow paths need no fancier grid)."""
    return [1.0 - i / steps for i in range(steps + 1)]


class _Stream:
    """One conditioning's pass over the frames: its own KV cache (or, uncached, its own history)."""

    def __init__(self, model: WorldModel, cond: Conditioning, cache: bool):
        self.model, self.cond = model, cond
        self.kv = KVCache(len(model.blocks), model.cfg.window) if cache else None
        self.prev: list[torch.Tensor] = []  # uncached reference: every frame's previous frame and clean change
        self.delta: list[torch.Tensor] = []

    def predict(self, prev: torch.Tensor, x: torch.Tensor, t: float, f: int) -> torch.Tensor:
        """The clean change of predicted frame f (position f - 1) from its noisy change x at level t."""
        B = x.shape[0]
        level = torch.full((B, 1), t, device=x.device)
        if self.kv is not None:
            return self.model.denoise(prev, x, level, self.cond.frames(f - 1, f), start=f - 1, cache=self.kv)[0]
        seq_prev, seq_x = torch.cat([*self.prev, prev], 1), torch.cat([*self.delta, x], 1)
        levels = torch.cat([torch.zeros(B, f - 1, device=x.device), level], 1)
        return self.model.denoise(seq_prev, seq_x, levels, self.cond.frames(0, f), start=0)[0][:, -1:]

    def commit(self, prev: torch.Tensor, delta: torch.Tensor, f: int) -> None:
        """Frame f is final: its clean change takes its place in the cache (or the history)."""
        if self.kv is not None:
            zero = torch.zeros(delta.shape[0], 1, device=delta.device)
            self.model.denoise(prev, delta, zero, self.cond.frames(f - 1, f), start=f - 1, cache=self.kv)
        else:
            self.prev.append(prev)
            self.delta.append(delta)


def sample_frames(model: WorldModel, context: torch.Tensor, cond: Conditioning, null: Conditioning | None, horizon: int,
                  steps: int, guidance: float = 1.0, cache: bool = True, min_change: float = 0.0) -> torch.Tensor:
    """context [B, C, 3, H, W] real frames in [-1, 1]; cond: of predicted frames 1..C+horizon-1 -> [B, horizon, 3, H, W].
    Noise: one torch.randn per frame from the global RNG, in frame order, so the cached and uncached paths (and a
    rollout with other actions) draw the same noise."""
    B, C = context.shape[:2]
    times = euler_times(steps)
    streams = [_Stream(model, cond, cache)] + ([_Stream(model, null, cache)] if null is not None else [])
    for f in range(1, C):  # the context's known changes
        for s in streams:
            s.commit(context[:, f - 1:f], context[:, f:f + 1] - context[:, f - 1:f], f)
    prev, out = context[:, C - 1:C], []
    for i in range(horizon):
        f = C + i
        x = torch.randn(B, 1, *context.shape[2:], device=context.device)
        for k in range(steps):
            x0 = streams[0].predict(prev, x, times[k], f)
            if null is not None:
                x0_null = streams[1].predict(prev, x, times[k], f)
                x0 = x0_null + guidance * (x0 - x0_null)
            x = x0 + (times[k + 1] / times[k]) * (x - x0)  # Euler step of v = (x - x0) / t from t_k to t_k+1
        # onto the 8-bit grid the frames come from: a change smaller than half a grey level is no change, so a static
        # background stays exactly static (an unrounded drift of a fraction of a level per frame is what separates
        # ~45 dB from an identical frame) and the next frame is conditioned on what the rollout returns
        if min_change > 0:  # a predicted change below min_change grey levels is no change (see rollout)
            x = torch.where(x.abs() < min_change / 127.5, torch.zeros_like(x), x)
        frame = to_pixels(to_uint8(prev + x))
        delta = frame - prev
        for s in streams:
            s.commit(prev, delta, f)
        out.append(frame)
        prev = frame
    return torch.cat(out, 1) if out else context[:, :0]


def _per_clip(x, B: int, dtype: torch.dtype, device: torch.device, what: str) -> torch.Tensor:
    x = torch.as_tensor(x, device=device).to(dtype).reshape(-1)
    if x.numel() == 1:
        return x.expand(B)
    if x.numel() != B:
        raise UnifiedActionError(f"rollout: {what}: expected one value or {B} (one per clip), got {x.numel()}")
    return x


@torch.no_grad()
def check_context(model: WorldModel, context: torch.Tensor, who: str) -> tuple[int, int]:
    """Real context frames a rollout starts from: uint8 [B, C >= 1, H, W, 3] at the model's image size -> (B, C)."""
    if context.dtype != torch.uint8 or context.ndim != 5 or context.shape[-1] != 3:
        raise UnifiedActionError(f"{who}: context: expected uint8 [B, C, H, W, 3], got {context.dtype} "
                                 f"{list(context.shape)}")
    B, C = context.shape[:2]
    if C < 1:
        raise UnifiedActionError(f"{who}: context: at least one real frame is needed")
    if tuple(context.shape[2:4]) != tuple(model.cfg.image_size):
        raise UnifiedActionError(f"{who}: context: frames of {tuple(context.shape[2:4])}, the model takes "
                                 f"{tuple(model.cfg.image_size)}")
    return B, C


def rollout(model: WorldModel, context: torch.Tensor, actions: dict[str, torch.Tensor], embodiment, control_hz,
            horizon: int, steps: int = 1, cache: bool = True, frame_stride=1, guidance: float = 1.0,
            min_change: float = 0.0) -> torch.Tensor:
    """context uint8 [B, C, H, W, 3]; actions: ACTION_KEYS each [B, >= C+horizon-1, P], frame f's chunk (the actions
    from frame f to frame f+1); embodiment token id, control Hz and frame stride, one or one per clip; guidance:
    classifier-free guidance over actions (1 = none); min_change: predicted changes of fewer grey levels are dropped
    (a short-trained model drifts static backgrounds by a level or two a frame) -> uint8 [B, horizon, H, W, 3]. Any horizon: the temporal
    window slides past max_frames."""
    B, C = check_context(model, context, "rollout")
    if steps < 1 or horizon < 0 or guidance < 0:
        raise UnifiedActionError(f"rollout: steps ({steps}) must be >= 1, horizon ({horizon}) >= 0, guidance ({guidance}) >= 0")
    actions = with_agents(actions)
    missing = [k for k in ACTION_KEYS if k not in actions]
    if missing:
        raise UnifiedActionError(f"rollout: actions: missing {', '.join(missing)}")
    device = context.device
    n = C + horizon - 1
    batch: dict[str, torch.Tensor] = {}
    for k in ACTION_KEYS:
        a = torch.as_tensor(actions[k], device=device)
        if a.ndim != 3 or a.shape[0] != B or a.shape[1] < n:
            raise UnifiedActionError(f"rollout: actions: {k}: expected [{B}, >= {n}, P] (one chunk per frame but the "
                                     f"last), got {list(a.shape)}")
        batch[k] = torch.cat([a[:, :n], a[:, :1]], 1).to(BATCH_TENSORS[k])  # conditioning() drops the last chunk
    batch["embodiment"] = _per_clip(embodiment, B, torch.int64, device, "embodiment")
    batch["control_hz"] = _per_clip(control_hz, B, torch.float32, device, "control_hz")
    batch["frame_stride"] = _per_clip(frame_stride, B, torch.int64, device, "frame_stride")

    if horizon == 0:
        return context[:, :0].clone()
    with torch.inference_mode():  # no autograd bookkeeping at all: faster than no_grad for tiny on a CPU
        cond = model.conditioning(batch)
        null = model.conditioning(batch, torch.ones(B, dtype=torch.bool, device=device)) if guidance != 1.0 else None
        frames = sample_frames(model, to_pixels(context), cond, null, horizon, steps, guidance, cache, min_change)
        out = to_uint8(frames)
    return out.clone()  # a normal tensor again: callers may write into it outside inference mode
