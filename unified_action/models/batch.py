"""The batch a world model trains and rolls out on: one definition of its keys and dtypes.

The loader (data/loader.py) produces these keys as numpy arrays; the trainer moves them to the device
with these dtypes; evaluation and sampling read the same keys. A new key is added here once.
"""

from __future__ import annotations

import numpy as np
import torch

ACTION_KEYS = ("action_tokens", "action_mask", "action_slots", "action_steps")  # [B, F, P] each: frame f's chunk

BATCH_TENSORS: dict[str, torch.dtype] = {
    "frames": torch.uint8,  # [B, F, H, W, 3]
    "action_tokens": torch.int64,
    "action_mask": torch.bool,
    "action_slots": torch.int64,
    "action_steps": torch.int64,
    "embodiment": torch.int64,  # [B] embodiment token id
    "control_hz": torch.float32,  # [B] the embodiment's control rate
    "frame_stride": torch.int64,  # [B] control steps between two frames (= the tokenizer's chunk length)
}


def to_device(batch: dict, device: torch.device, keys=None) -> dict[str, torch.Tensor]:
    """The model's tensors of a loader batch (or any subset of `keys`), on `device` with their dtypes."""
    return {k: torch.as_tensor(np.asarray(batch[k])).to(device=device, dtype=BATCH_TENSORS[k])
            for k in (keys or BATCH_TENSORS)}
