"""The streaming session (one chunk per call) against `rollout` (every chunk up front): the same frames for the same
actions and the same noise, inside the temporal window and sliding far past it, with guidance and min_change."""

from __future__ import annotations

import pytest
import torch
from models.test_sampling import awake_tiny, inputs

from unified_action.errors import UnifiedActionError
from unified_action.models.batch import ACTION_KEYS
from unified_action.models.sampling import rollout, sample_frames
from unified_action.models.streaming import StreamingSession
from unified_action.models.world_model import Conditioning, to_pixels, to_uint8


def stream(model, context, actions, horizon, seed, **kw):
    C = context.shape[1]
    session = StreamingSession(model, context, {k: v[:, :C - 1] for k, v in actions.items()}, torch.tensor([16, 17]),
                               torch.tensor([10.0, 50.0]), torch.tensor([2, 5]), generator=torch.Generator().manual_seed(seed),
                               **kw)
    return torch.stack([session.step({k: v[:, f] for k, v in actions.items()}) for f in range(C - 1, C - 1 + horizon)], 1)


def per_frame_conditioning(model, actions, batch_static, C, horizon, drop=None):
    """Frame f's conditioning computed from its chunk and the one before (what the session computes), stitched over
    frames 1..C+horizon-1 into one Conditioning."""
    vec, tok = [], []
    for f in range(1, C + horizon):
        lo = max(0, f - 2)
        seq = {k: torch.cat([v[:, lo:f], v[:, f - 1:f]], 1) for k, v in actions.items()}
        c = model.conditioning({**seq, **batch_static}, drop)
        vec.append(c.vector[:, -1:])
        tok.append(c.tokens[:, -1:])
    return Conditioning(torch.cat(vec, 1), torch.cat(tok, 1))


CASES = [(2, 1, 1.0, 0.0), (11, 1, 1.5, 3.0), (9, 3, 2.0, 0.0)]  # horizon 9, 11: far past the window of 3 frames


@pytest.mark.parametrize("horizon,steps,guidance,min_change", CASES)
def test_session_equals_the_sampler_bit_for_bit(horizon, steps, guidance, min_change):
    """Exact: the session against sample_frames (rollout's sampler) given the same per-frame conditioning and the same
    noise: the KV cache carried across calls, the window sliding, guidance, min_change, the 8-bit rounding."""
    model = awake_tiny(max_frames=4)
    context, actions = inputs(model.cfg, 2 + horizon)
    static = {"embodiment": torch.tensor([16, 17]), "control_hz": torch.tensor([10.0, 50.0]),
              "frame_stride": torch.tensor([2, 5])}
    with torch.inference_mode():
        cond = per_frame_conditioning(model, actions, static, 2, horizon)
        null = per_frame_conditioning(model, actions, static, 2, horizon, torch.ones(2, dtype=torch.bool))
        torch.manual_seed(5)
        ref = to_uint8(sample_frames(model, to_pixels(context), cond, null if guidance != 1.0 else None, horizon, steps,
                                     guidance, cache=True, min_change=min_change))
    got = stream(model, context, actions, horizon, 5, steps=steps, guidance=guidance, min_change=min_change)
    assert got.dtype == torch.uint8 and got.shape == ref.shape
    assert torch.equal(got, ref)


@pytest.mark.parametrize("horizon,steps,guidance,min_change", CASES)
def test_session_equals_rollout_frame_for_frame(horizon, steps, guidance, min_change):
    """Against rollout() itself (all chunks up front). Its conditioning is one matmul over every frame, the session's
    one frame at a time: the same numbers to ~3e-7, which may flip a pixel's 8-bit rounding by one level (the same
    tolerance as the cache against full recomputation, tests/models/test_sampling.py); no pixel differs by more."""
    model = awake_tiny(max_frames=4)
    context, actions = inputs(model.cfg, 2 + horizon)
    torch.manual_seed(5)
    ref = rollout(model, context, actions, torch.tensor([16, 17]), torch.tensor([10.0, 50.0]), horizon=horizon,
                  steps=steps, frame_stride=torch.tensor([2, 5]), guidance=guidance, min_change=min_change)
    got = stream(model, context, actions, horizon, 5, steps=steps, guidance=guidance, min_change=min_change)
    assert got.shape == ref.shape
    d = (got.int() - ref.int()).abs()
    # mean 0.0101 on an AMD EPYC (AVX-512) over the 11-frame horizon, < 0.01 on an Intel Xeon: the CPU's matmul order
    assert d[:, 0].max() <= 1 and d.float().mean() < 0.02 and d.max() <= 8, (d.float().mean(), d.max())
    assert (d == 0).float().mean() > 0.99  # frame for frame the same pictures


def test_actions_change_the_frames_and_guidance_changes_mid_session():
    model = awake_tiny(max_frames=4)
    context, actions = inputs(model.cfg, 8, seed=1)
    _, other = inputs(model.cfg, 8, seed=2)
    a = stream(model, context, actions, 5, 0)
    b = stream(model, context, other, 5, 0)
    assert not torch.equal(a, b)
    C = context.shape[1]
    session = StreamingSession(model, context, {k: v[:, :C - 1] for k, v in actions.items()}, torch.tensor([16, 17]),
                               torch.tensor([10.0, 50.0]), torch.tensor([2, 5]), generator=torch.Generator().manual_seed(0))
    first = session.step({k: v[:, C - 1] for k, v in actions.items()})
    assert torch.equal(first, a[:, 0])
    session.guidance = 3.0  # the null stream kept its cache from the start: no replay needed
    assert session.step({k: v[:, C] for k, v in actions.items()}).shape == (2, 32, 32, 3)
    assert session.frames == 2 and session.position == C + 2


def test_bad_input_is_one_line():
    model = awake_tiny(max_frames=4)
    context, actions = inputs(model.cfg, 4)
    ctx_actions = {k: v[:, :1] for k, v in actions.items()}
    with pytest.raises(UnifiedActionError, match="context: expected uint8"):
        StreamingSession(model, context.float(), ctx_actions, 16, 10.0)
    with pytest.raises(UnifiedActionError, match="context_actions: missing action_mask"):
        StreamingSession(model, context, {"action_tokens": actions["action_tokens"]}, 16, 10.0)
    session = StreamingSession(model, context, ctx_actions, 16, 10.0, guidance_ready=False)
    with pytest.raises(UnifiedActionError, match="guidance"):
        session.guidance = 2.0
    with pytest.raises(UnifiedActionError, match=r"chunk: action_tokens: expected \[2, >= 1, P\]"):
        session.step({k: v[:1, 0] for k, v in actions.items()})
    assert set(ACTION_KEYS) == set(actions)
