"""Autoregressive rollout: shapes, the KV cache against full recomputation, sliding past the window, actions, guidance."""

from __future__ import annotations

import pytest
import torch

from unified_action.errors import UnifiedActionError
from unified_action.models import ModelConfig, WorldModel, model_config
from unified_action.models.sampling import euler_times, rollout, sample_frames
from unified_action.models.world_model import KVCache, to_pixels


def awake_tiny(max_frames: int = 4, **overrides) -> WorldModel:
    """`tiny` at 32x32 with a short window, its adaLN-Zero layers given weights (as after some training)."""
    torch.manual_seed(0)
    model = WorldModel(model_config("tiny", image_size=(32, 32), max_action_tokens=8, max_frames=max_frames,
                                    context_frames=2, **overrides)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for lin in [*(b.ada for b in model.blocks), model.final.ada, model.final.linear]:
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.05)
    return model


def inputs(cfg: ModelConfig, frames: int, B: int = 2, C: int = 2, P: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(P) < torch.randint(3, P + 1, (B, frames, 1), generator=g)
    actions = {"action_tokens": torch.randint(5136, 5392, (B, frames, P), generator=g).where(mask, 0),
               "action_mask": mask,
               "action_slots": torch.randint(0, 8, (B, frames, P), generator=g).where(mask, -1),
               "action_steps": torch.randint(0, 4, (B, frames, P), generator=g).where(mask, -1)}
    actions["action_agents"] = torch.full_like(actions["action_slots"], -1)  # one agent, as the loader writes it
    context = torch.randint(0, 256, (B, C, *cfg.image_size, 3), generator=g, dtype=torch.uint8)
    return context, actions


def test_rollout_shapes_and_dtype():
    model = awake_tiny()
    context, actions = inputs(model.cfg, 2 + 3)
    out = rollout(model, context, actions, embodiment=16, control_hz=10.0, horizon=3, frame_stride=2)
    assert out.shape == (2, 3, 32, 32, 3) and out.dtype == torch.uint8
    assert rollout(model, context, actions, torch.tensor([16, 17]), torch.tensor([10.0, 50.0]), horizon=0).shape[1] == 0


@pytest.mark.parametrize("horizon,steps", [(2, 4), (9, 3)])  # inside the window; sliding 7 frames past it
def test_cached_rollout_equals_full_recomputation(horizon, steps):
    model = awake_tiny(max_frames=4)
    cfg = model.cfg
    context, actions = inputs(cfg, 2 + horizon)
    batch = {**actions, "embodiment": torch.tensor([16, 17]), "control_hz": torch.tensor([10.0, 50.0]),
             "frame_stride": torch.tensor([2, 5])}
    with torch.no_grad():
        cond = model.conditioning(batch)
        null = model.conditioning(batch, torch.ones(2, dtype=torch.bool))
        for guide in (None, 2.0):
            torch.manual_seed(7)
            cached = sample_frames(model, to_pixels(context), cond, guide and null, horizon, steps, guide or 1.0, cache=True)
            torch.manual_seed(7)
            full = sample_frames(model, to_pixels(context), cond, guide and null, horizon, steps, guide or 1.0, cache=False)
            assert cached.shape == (2, horizon, 3, *cfg.image_size)
            # frames are rounded to the 8-bit grid each step: float-tolerance differences (which depend on the CPU's
            # kernels) may flip a rounding, and a flipped pixel is the next frame's input, so with guidance 2 a few
            # percent of pixels differ by a level or two after 9 frames; the exact check is the teacher-forced test below
            diff = (cached - full).abs()
            assert diff[:, 0].max() <= 1 / 127.5 + 1e-6, diff[:, 0].max()
            assert diff.mean() < 0.1 / 127.5 and diff.max() <= 8 / 127.5, (diff.mean() * 127.5, diff.max() * 127.5)
            assert (cached[:, 1:] - cached[:, :-1]).abs().mean() > 0.01  # frames change: a real rollout

    torch.manual_seed(7)
    a = rollout(model, context, actions, 16, 10.0, horizon, steps=steps, cache=True)
    torch.manual_seed(7)
    b = rollout(model, context, actions, 16, 10.0, horizon, steps=steps, cache=False)
    d = (a.int() - b.int()).abs()  # uint8 rounding of float-tolerance differences, carried into later frames
    assert d[:, 0].max() <= 1 and d.float().mean() < 0.1 and d.max() <= 8


def test_cache_matches_recomputation_on_the_same_history():
    """Teacher-forced: both paths commit the same frames, so no rounding compounds; every prediction, also past the
    window (max_frames=4, 9 frames), must agree to float tolerance."""
    from unified_action.models.sampling import _Stream

    model = awake_tiny(max_frames=4)
    cfg = model.cfg
    context, actions = inputs(cfg, 11)
    batch = {**actions, "embodiment": torch.tensor([16, 17]), "control_hz": torch.tensor([10.0, 50.0]),
             "frame_stride": torch.tensor([2, 5])}
    frames = to_pixels(torch.randint(0, 256, (2, 11, *cfg.image_size, 3), generator=torch.Generator().manual_seed(3),
                                     dtype=torch.uint8))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        cond = model.conditioning(batch)
        cached, full = _Stream(model, cond, cache=True), _Stream(model, cond, cache=False)
        worst = 0.0
        for f in range(1, 11):
            prev, delta = frames[:, f - 1:f], frames[:, f:f + 1] - frames[:, f - 1:f]
            x = torch.randn(delta.shape, generator=g)
            for t in (1.0, 0.5):
                a, b = cached.predict(prev, x, t, f), full.predict(prev, x, t, f)
                worst = max(worst, (a - b).abs().max().item())
            cached.commit(prev, delta, f)
            full.commit(prev, delta, f)
    assert worst < 1e-4, worst


def test_rollout_longer_than_the_window():
    model = awake_tiny(max_frames=3)
    context, actions = inputs(model.cfg, 2 + 10, B=1)
    out = rollout(model, context, actions, 16, 10.0, horizon=10, steps=2)
    assert out.shape == (1, 10, 32, 32, 3)


def test_rollout_follows_the_actions_and_ignores_the_last_chunk():
    """Generated frame f is conditioned on chunk f-1; the chunk of the last frame leads past the horizon."""
    model = awake_tiny()
    context, actions = inputs(model.cfg, 2 + 2, B=1)

    def run(acts, guidance=1.0):
        torch.manual_seed(3)
        return rollout(model, context, acts, 16, 10.0, horizon=2, steps=2, guidance=guidance)

    base = run(actions)
    assert not torch.equal(base, run(actions, guidance=3.0))  # guidance changes what the actions add
    for f, changes in ((3, False), (1, True)):
        other = {k: v.clone() for k, v in actions.items()}
        other["action_tokens"][:, f] = torch.where(other["action_mask"][:, f], 5140, 0)
        assert (not torch.equal(base, run(other))) == changes, f


def test_rollout_is_reproducible_from_the_seed():
    model = awake_tiny()
    context, actions = inputs(model.cfg, 4)
    torch.manual_seed(11)
    a = rollout(model, context, actions, 16, 10.0, horizon=2, steps=3)
    torch.manual_seed(11)
    assert torch.equal(a, rollout(model, context, actions, 16, 10.0, horizon=2, steps=3))


def test_rollout_refuses_bad_inputs():
    model = awake_tiny()
    context, actions = inputs(model.cfg, 4)
    with pytest.raises(UnifiedActionError, match="action_tokens: expected \\[2, >= 5"):
        rollout(model, context, actions, 16, 10.0, horizon=4)
    with pytest.raises(UnifiedActionError, match="uint8"):
        rollout(model, context.float(), actions, 16, 10.0, horizon=2)
    with pytest.raises(UnifiedActionError, match="missing action_mask"):
        rollout(model, context, {k: v for k, v in actions.items() if k != "action_mask"}, 16, 10.0, horizon=2)
    with pytest.raises(UnifiedActionError, match="embodiment"):
        rollout(model, context, actions, [16, 17, 18], 10.0, horizon=2)


def test_kv_cache_ring_holds_the_last_window_frames():
    cache = KVCache(depth=1, window=3)
    frame = [torch.full((1, 1, 1, 2), float(p)) for p in range(6)]
    cache.load([(torch.cat(frame[:2], dim=2), torch.cat(frame[:2], dim=2))], start=0)
    for p in range(2, 6):
        k, _ = cache.window_kv(0, frame[p], frame[p], p)
        assert sorted(k[0, 0, :, 0].tolist()) == [float(q) for q in range(max(0, p - 2), p + 1)]


def test_euler_times():
    assert euler_times(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
