"""The batch a world model trains and rolls out on: one definition of its keys and dtypes.

The loader (data/loader.py) produces these keys as numpy arrays; the trainer moves them to the device
with these dtypes; evaluation and sampling read the same keys. A new key is added here once.
"""

from __future__ import annotations

import numpy as np
import torch

# [B, F, P] each: frame f's chunk. action_agents (each token's agent, -1 for none) may be left out by a caller whose
# embodiments have one agent: with_agents fills it in
ACTION_KEYS = ("action_tokens", "action_mask", "action_slots", "action_steps", "action_agents")

BATCH_TENSORS: dict[str, torch.dtype] = {
    "frames": torch.uint8,  # [B, F, H, W, 3]
    "action_tokens": torch.int64,
    "action_mask": torch.bool,
    "action_slots": torch.int64,
    "action_steps": torch.int64,
    "action_agents": torch.int64,
    "embodiment": torch.int64,  # [B] embodiment token id
    "control_hz": torch.float32,  # [B] the embodiment's control rate
    "frame_stride": torch.int64,  # [B] control steps between two frames (= the tokenizer's chunk length)
}


def to_device(batch: dict, device: torch.device, keys=None) -> dict[str, torch.Tensor]:
    """The model's tensors of a loader batch (or any subset of `keys`), on `device` with their dtypes."""
    return {k: torch.as_tensor(np.asarray(batch[k])).to(device=device, dtype=BATCH_TENSORS[k])
            for k in (keys or BATCH_TENSORS)}


def with_agents(actions: dict) -> dict:
    """`actions` with action_agents: as given, or -1 everywhere (one agent) when a caller left it out."""
    if "action_agents" in actions or "action_slots" not in actions:
        return actions
    slots = actions["action_slots"]
    return {**actions, "action_agents": slots * 0 - 1}
