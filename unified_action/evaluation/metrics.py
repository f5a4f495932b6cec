"""Frame metrics of a rollout against the real future: PSNR, SSIM, and their means per horizon step.

Every function takes uint8 frames [..., H, W, 3] (the loader's and the rollout's format) and returns one value
per frame, so the caller keeps the [clips, horizon] layout and averages per step at the end.
"""

from __future__ import annotations

import numpy as np
import torch

from unified_action.errors import UnifiedActionError

# PSNR of identical frames is infinite; a cap keeps means over clips finite and comparable. 100 dB is an MSE of
# 255^2 * 1e-10, far below one grey level (MSE >= 1/(H*W*3) for any differing frame), so a capped value can
# only mean "identical".
PSNR_CAP_DB = 100.0
_PEAK = 255.0


def _check_pair(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape or a.ndim < 3 or a.shape[-1] != 3:
        raise UnifiedActionError(f"{what}: expected two uint8 arrays [..., H, W, 3] of one shape, got {a.shape} and {b.shape}")


def as_uint8(frames) -> np.ndarray:
    """A torch tensor or array of frames as a uint8 numpy array (metrics are defined on the stored 8-bit frames)."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise UnifiedActionError(f"frames: expected uint8, got {frames.dtype}")
    return frames


def psnr(a, b) -> np.ndarray:
    """Peak signal-to-noise ratio in dB per frame of uint8 frames [..., H, W, 3] -> [...], capped at PSNR_CAP_DB."""
    a, b = as_uint8(a), as_uint8(b)
    _check_pair(a, b, "psnr")
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(-3, -2, -1))
    floor = _PEAK ** 2 * 10 ** (-PSNR_CAP_DB / 10)
    return 10.0 * np.log10(_PEAK ** 2 / np.maximum(mse, floor))


def ssim(a, b) -> np.ndarray:
    """Structural similarity per frame of uint8 frames [..., H, W, 3] -> [...] (1 for identical frames)."""
    from skimage.metrics import structural_similarity

    a, b = as_uint8(a), as_uint8(b)
    _check_pair(a, b, "ssim")
    lead = a.shape[:-3]
    flat_a, flat_b = a.reshape(-1, *a.shape[-3:]), b.reshape(-1, *b.shape[-3:])
    # skimage's default 7x7 window needs frames of at least 7 pixels a side; the model's frames are >= 16
    out = [structural_similarity(x, y, channel_axis=-1, data_range=255) for x, y in zip(flat_a, flat_b)]
    return np.asarray(out, dtype=np.float64).reshape(lead)


def per_step(values: np.ndarray) -> list[float]:
    """[clips, horizon] -> the mean of each horizon step over the clips that have a value (NaN = none)."""
    values = np.asarray(values, dtype=np.float64)
    out = []
    for col in values.T:
        ok = col[np.isfinite(col)]
        out.append(float(ok.mean()) if ok.size else float("nan"))
    return out


def overall(values: np.ndarray) -> float:
    """The mean over every clip and step that has a value (NaN when none has)."""
    values = np.asarray(values, dtype=np.float64)
    ok = values[np.isfinite(values)]
    return float(ok.mean()) if ok.size else float("nan")
