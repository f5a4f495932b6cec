"""Autoregressive few-step rollout: given clean context frames and per-frame actions, generate frames one at a time.

Each new frame starts from Gaussian noise at t = 1 and is integrated to t = 0 with `steps` Euler steps of
the predicted velocity (rectified flow: straight paths, so 4-8 steps suffice); every frame before it is
clean (t = 0), as training's rollout regime (world_model.sample_noise_levels) shows it.

KV cache. Temporal attention is causal and limited to a window of `max_frames` frames, so a frame's keys
and values in every block depend only on frames at or before it. The cache keeps, per block, the temporal
K/V of the last `max_frames` frames in a ring; a denoising step runs only the new frame's tokens through
the blocks (spatial attention is within the frame, temporal attention is one query frame over the cached
window and itself). Once the frame is done it is run once more at t = 0, and its clean K/V take the slot
of the frame that just left the window. Rotary positions are absolute frame indices, and attention sees only
their differences, so a sliding window keeps every distance within the trained range.

The uncached reference (`cache=False`) recomputes the whole history at every step with the same
sliding-window mask; it is what the cache must equal (tests/models/test_sampling.py), and quadratic in
the rollout's length.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from unified_action.errors import UnifiedActionError

if TYPE_CHECKING:
    from unified_action.models.world_model import WorldModel

ACTION_KEYS = ("action_tokens", "action_mask", "action_slots", "action_steps")


class KVCache:
    """Per block, a ring of `window` slots of temporal keys/values [B*N, heads, window, d]; frame at position
    p lives in slot p % window. Writing frame p overwrites frame p - window, the one that just left its window;
    attention over the slots needs no order (rotary positions are already in the keys, and no mask is left)."""

    def __init__(self, depth: int, window: int):
        self.window = window
        self.k: list[torch.Tensor | None] = [None] * depth
        self.v: list[torch.Tensor | None] = [None] * depth

    def _write(self, layer: int, k: torch.Tensor, v: torch.Tensor, start: int) -> None:
        if self.k[layer] is None:
            S, H, _, d = k.shape
            self.k[layer] = k.new_zeros(S, H, self.window, d)
            self.v[layer] = v.new_zeros(S, H, self.window, d)
        for j in range(max(0, k.shape[2] - self.window), k.shape[2]):  # only the last `window` frames matter
            slot = (start + j) % self.window
            self.k[layer][:, :, slot] = k[:, :, j]
            self.v[layer][:, :, slot] = v[:, :, j]

    def load(self, presents: list[tuple[torch.Tensor, torch.Tensor]], start: int) -> None:
        """Store the K/V of consecutive frames from position `start` on (a prefill computed without the cache)."""
        for layer, (k, v) in enumerate(presents):
            self._write(layer, k, v, start)

    def window_kv(self, layer: int, k: torch.Tensor, v: torch.Tensor, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Put frame `pos`'s k, v [S, H, 1, d] in its slot -> the K/V of frames pos-window+1..pos (fewer at the start).
        Denoising steps write their noisy K/V there too; the final clean pass overwrites them."""
        self._write(layer, k, v, pos)
        n = min(pos + 1, self.window)  # positions start at 0, so before the ring wraps slots 0..pos hold them
        return self.k[layer][:, :, :n], self.v[layer][:, :, :n]


def euler_times(steps: int) -> list[float]:
    """Noise levels 1 = t_0 > t_1 > ... > t_steps = 0, evenly spaced (straight flow paths need no fancier grid)."""
    return [1.0 - i / steps for i in range(steps + 1)]


def sample_latents(model: WorldModel, z_ctx: torch.Tensor, cond: torch.Tensor, horizon: int, steps: int,
                   cache: bool = True) -> torch.Tensor:
    """z_ctx [B, C, c, h, w] clean context latents, cond [B, C+horizon, W] (actions + control frequency)
    -> [B, horizon, c, h, w] generated latents. Noise: one torch.randn per frame from the global RNG, in
    frame order, so the cached and uncached paths draw the same noise."""
    B, C = z_ctx.shape[:2]
    times = euler_times(steps)
    device = z_ctx.device
    kv = KVCache(len(model.blocks), model.cfg.max_frames) if cache else None
    if kv is not None and C > 0:
        kv.load(model.velocity(z_ctx, torch.zeros(B, C, device=device), cond[:, :C], start=0)[1], start=0)
    history = [z_ctx]
    for i in range(horizon):
        f = C + i
        x = torch.randn(B, 1, *z_ctx.shape[2:], device=device)
        for s in range(steps):
            t = torch.full((B, 1), times[s], device=device)
            if kv is not None:
                v = model.velocity(x, t, cond[:, f:f + 1], start=f, cache=kv)[0]
            else:  # reference: the whole history, clean, then this frame at t
                seq = torch.cat([*history, x], dim=1)
                levels = torch.cat([torch.zeros(B, f, device=device), t], dim=1)
                v = model.velocity(seq, levels, cond[:, :f + 1], start=0)[0][:, -1:]
            x = x + (times[s + 1] - times[s]) * v
        x = x.clamp(-1.0, 1.0)  # the latent is tanh-bounded: anything outside is off the autoencoder's manifold
        if kv is not None:  # the finished frame, clean, takes its slot in the cache
            model.velocity(x, torch.zeros(B, 1, device=device), cond[:, f:f + 1], start=f, cache=kv)
        history.append(x)
    return torch.cat(history[1:], dim=1) if horizon else z_ctx[:, :0]


def _per_clip(x, B: int, dtype: torch.dtype, device: torch.device, what: str) -> torch.Tensor:
    x = torch.as_tensor(x, device=device).to(dtype).reshape(-1)
    if x.numel() == 1:
        return x.expand(B)
    if x.numel() != B:
        raise UnifiedActionError(f"rollout: {what}: expected one value or {B} (one per clip), got {x.numel()}")
    return x


@torch.no_grad()
def rollout(model: WorldModel, context: torch.Tensor, actions: dict[str, torch.Tensor], embodiment, control_hz,
            horizon: int, steps: int = 4, cache: bool = True) -> torch.Tensor:
    """context uint8 [B, C, H, W, 3]; actions: ACTION_KEYS each [B, >= C+horizon, P], frame f's chunk (the one
    starting at frame f: frame f+1 is conditioned on it); embodiment token id and control Hz, one or one per
    clip -> uint8 [B, horizon, H, W, 3]. Any horizon: the temporal window slides past max_frames."""
    if context.dtype != torch.uint8 or context.ndim != 5 or context.shape[-1] != 3:
        raise UnifiedActionError(f"rollout: context: expected uint8 [B, C, H, W, 3], got {context.dtype} "
                                 f"{list(context.shape)}")
    B, C = context.shape[:2]
    if tuple(context.shape[2:4]) != model.cfg.image_size:
        raise UnifiedActionError(f"rollout: context: frames of {tuple(context.shape[2:4])}, the model takes "
                                 f"{model.cfg.image_size}")
    if steps < 1 or horizon < 0:
        raise UnifiedActionError(f"rollout: steps ({steps}) must be >= 1 and horizon ({horizon}) >= 0")
    missing = [k for k in ACTION_KEYS if k not in actions]
    if missing:
        raise UnifiedActionError(f"rollout: actions: missing {', '.join(missing)}")
    device = context.device
    acts = {}
    for k in ACTION_KEYS:
        a = torch.as_tensor(actions[k], device=device)
        if a.ndim != 3 or a.shape[0] != B or a.shape[1] < C + horizon:
            raise UnifiedActionError(f"rollout: actions: {k}: expected [{B}, >= {C + horizon}, P] (one chunk per "
                                     f"context and generated frame), got {list(a.shape)}")
        acts[k] = a[:, :C + horizon]
    emb = _per_clip(embodiment, B, torch.int64, device, "embodiment")
    hz = _per_clip(control_hz, B, torch.float32, device, "control_hz")

    if horizon == 0:
        return context[:, :0].clone()
    with torch.inference_mode():  # no autograd bookkeeping at all: ~20% faster than no_grad for tiny on a CPU
        z_ctx = model.ae.encode(model.ae.to_pixels(context, model.dtype)).float()
        cond = model.conditioning(acts, emb, hz)
        z = sample_latents(model, z_ctx, cond, horizon, steps, cache)
        frames = model.ae.to_uint8(model.ae.decode(z.to(model.dtype)))
    return frames.clone()  # a normal tensor again: callers may write into it outside inference mode
