"""Low-rank adapters for fine-tuning a WorldModel: the layer, where it goes, and how it merges back.

Beside the model (as litgpt keeps lora.py beside its model): fine-tuning recipes (training/finetune.py) apply it,
the export (training/export.py) merges it, and neither needs the other.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LoRALinear(nn.Linear):
    """A frozen Linear plus a trainable low-rank update x A^T B^T * alpha/rank; B starts at zero, so until it moves
    the layer computes exactly what its base did (LoRA, Hu et al. 2021).

    Not `peft`: peft requires transformers, accelerate and huggingface_hub (nothing else here needs them), wraps
    the model in a PeftModel whose state-dict keys differ from a WorldModel's, and knows neither our checkpoints nor
    our export. This keeps the base layer's own `weight`/`bias` parameters (and keys), with `lora_A`/`lora_B`
    beside them, so `merge_lora` turns a checkpoint back into a plain WorldModel state dict."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float):
        nn.Module.__init__(self)  # not nn.Linear's: the base's parameters are adopted, not re-created
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        for p in (self.weight, self.bias):
            if p is not None:
                p.requires_grad_(False)
        self.rank, self.scale = rank, alpha / rank
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, dtype=w.dtype, device=w.device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, dtype=w.dtype, device=w.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # peft's and the paper's init of A

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, scale={self.scale:g}"


def merge_lora(state: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """A state dict with `<layer>.lora_A/B` -> the plain one: weight + scale * B @ A (in fp32), adapter keys dropped."""
    out = {k: v for k, v in state.items() if not k.endswith((".lora_A", ".lora_B"))}
    for key in state:
        if key.endswith(".lora_A"):
            layer = key[: -len(".lora_A")]
            a, b, w = state[key].float(), state[f"{layer}.lora_B"].float(), state[f"{layer}.weight"]
            out[f"{layer}.weight"] = (w.float() + scale * (b @ a)).to(w.dtype)
    return out


