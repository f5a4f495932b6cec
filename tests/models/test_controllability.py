"""Actions actually condition the model: a short overfit on a tiny controllable world gives dPSNR > 0.

The world: a white square on a black 32x32 torus that moves 4 pixels in the direction of the frame's action
token (4 directions). Nothing but the action says where it goes next, so a model that ignores actions (the
field's known failure, ANCHORS.md) cannot beat chance here. Genie's controllability metric: dPSNR =
PSNR(real, rollout with the real actions) - PSNR(real, rollout with other actions), same noise.
"""

from __future__ import annotations

import pytest
import torch

from unified_action.models import WorldModel, model_config
from unified_action.models.sampling import rollout as sample_rollout

pytestmark = pytest.mark.slow

SIZE, SQUARE, STEP = 32, 8, 4
DIRECTIONS = torch.tensor([[0, STEP], [0, -STEP], [STEP, 0], [-STEP, 0]])


def world(batch: int, frames: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """-> frames uint8 [B, F, 32, 32, 3], actions [B, F] (frame f's action moves the square to frame f+1)."""
    pos = torch.randint(0, SIZE, (batch, 2), generator=g)
    acts = torch.randint(0, 4, (batch, frames), generator=g)
    out = torch.zeros(batch, frames, SIZE, SIZE, 3, dtype=torch.uint8)
    grid = torch.arange(SIZE)[None]
    for f in range(frames):
        rows = (grid - pos[:, :1]) % SIZE < SQUARE
        cols = (grid - pos[:, 1:]) % SIZE < SQUARE
        out[:, f] = (rows[:, :, None] & cols[:, None, :])[..., None].to(torch.uint8) * 255
        pos = (pos + DIRECTIONS[acts[:, f]]) % SIZE
    return out, acts


def tokens(acts: torch.Tensor) -> dict[str, torch.Tensor]:
    """One action token per frame (ids 100..103), slot 0, step 0."""
    B, F = acts.shape
    return {"action_tokens": (100 + acts)[..., None], "action_mask": torch.ones(B, F, 1, dtype=torch.bool),
            "action_slots": torch.zeros(B, F, 1, dtype=torch.long), "action_steps": torch.zeros(B, F, 1, dtype=torch.long)}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of the mean squared error over all frames (no per-frame infinities when a frame repeats)."""
    mse = (a.float() - b.float()).pow(2).mean().clamp_min(1e-10)
    return float(10 * torch.log10(255.0 ** 2 / mse))


def test_short_overfit_gives_positive_dpsnr():
    torch.manual_seed(0)
    cfg = model_config("tiny", image_size=(SIZE, SIZE), vocab_size=128, max_action_tokens=1, max_frames=4,
                       context_frames=2, depth=2)
    model = WorldModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        frames, acts = world(16, 4, g)
        loss = model({"frames": frames, **tokens(acts), "embodiment": torch.full((16,), 16),
                      "control_hz": torch.full((16,), 10.0), "frame_stride": torch.ones(16, dtype=torch.long)})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()

    model.eval()
    frames, acts = world(32, 4, torch.Generator().manual_seed(99))
    other = (acts + torch.randint(1, 4, acts.shape, generator=torch.Generator().manual_seed(7))) % 4  # every action differs

    def rollout(a: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(5)  # the same noise for both rollouts: only the actions differ
        return sample_rollout(model, frames[:, :2], tokens(a), 16, 10.0, horizon=2, steps=1)

    real, counterfactual = psnr(rollout(acts), frames[:, 2:]), psnr(rollout(other), frames[:, 2:])
    copy_last = psnr(frames[:, 1:2].expand(-1, 2, -1, -1, -1), frames[:, 2:])
    assert real - counterfactual > 1.0, (real, counterfactual)
    assert real > copy_last, (real, copy_last)  # it predicts the move, not just the last frame
