"""PSNR, SSIM and their aggregation against values known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unified_action.errors import UnifiedActionError
from unified_action.evaluation.metrics import PSNR_CAP_DB, overall, per_step, psnr, ssim


def frames(seed: int, shape=(2, 3, 32, 32, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_psnr_of_identical_frames_is_the_cap():
    a = frames(0)
    out = psnr(a, a.copy())
    assert out.shape == (2, 3) and np.all(out == PSNR_CAP_DB)


def test_psnr_of_a_known_mse():
    a = np.zeros((4, 16, 16, 3), np.uint8)
    b = np.full_like(a, 10)  # MSE = 100 everywhere
    assert np.allclose(psnr(a, b), 10 * math.log10(255 ** 2 / 100.0))
    b[1, :8] = 0  # half the pixels right: MSE = 50, 3 dB better
    out = psnr(torch.from_numpy(a), torch.from_numpy(b))  # tensors as the rollout returns them
    assert np.isclose(out[1] - out[0], 10 * math.log10(2))


def test_ssim_is_one_for_identical_frames_only():
    a = frames(1)
    assert np.allclose(ssim(a, a), 1.0)
    b = a.copy()
    b[0, 1, 5:20, 5:20] = 255 - b[0, 1, 5:20, 5:20]
    out = ssim(a, b)
    assert out.shape == (2, 3) and out[0, 1] < 0.9 and np.allclose(np.delete(out.ravel(), 1), 1.0)


def test_metrics_refuse_mismatched_or_non_uint8_frames():
    with pytest.raises(UnifiedActionError, match="one shape"):
        psnr(frames(0), frames(0)[:, :2])
    with pytest.raises(UnifiedActionError, match="uint8"):
        ssim(frames(0).astype(np.float32), frames(0).astype(np.float32))


def test_per_step_and_overall_skip_missing_values():
    v = np.array([[1.0, np.nan, 3.0], [3.0, np.nan, np.inf]])
    steps = per_step(v)
    assert steps[0] == 2.0 and math.isnan(steps[1]) and steps[2] == 3.0
    assert overall(v) == pytest.approx(7 / 3)
