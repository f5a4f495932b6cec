"""The controllability monitor: does the model use its actions? Measured during training, per embodiment.

Every `every` steps, on the batch just trained on, the loss of a one-step rollout (the context's changes
clean, every later frame from pure noise: what must come from the context and the actions) is computed
twice without gradients, with the same noise: once with the clips' own actions and once with the actions SHUFFLED
among the batch's clips of the same embodiment (a clip alone of its embodiment gets its own chunks in
reverse order). A model that follows its actions predicts worse with someone else's: the gap
(shuffled - real) / real is positive. A gap that stays ~0 is the field's most reported failure ("shuffled
actions give the same loss", NVIDIA/cosmos-framework#175): it is logged to TensorBoard (control/<dataset>)
and the progress line, and warned about once it persists past half the run.

The noise comes from a generator of its own, so the monitor leaves torch's global RNG (and with it exact
resume) untouched.
"""

from __future__ import annotations

import torch

from unified_action.models.batch import ACTION_KEYS
from unified_action.training.distributed import all_reduce_

FLAT_GAP = 0.01  # a relative gap below this means "not using its actions"


def shuffled_actions(batch: dict[str, torch.Tensor], dataset: torch.Tensor) -> dict[str, torch.Tensor]:
    """The batch with every clip's action chunks taken from the next clip of the same dataset (cyclically);
    a clip alone of its dataset gets its own chunks in reverse time order."""
    B = dataset.shape[0]
    src = torch.arange(B)
    reverse = torch.zeros(B, dtype=torch.bool)
    for d in dataset.unique():
        idx = (dataset == d).nonzero().flatten()
        if len(idx) > 1:
            src[idx] = idx.roll(-1)
        else:
            reverse[idx] = True
    out = dict(batch)
    for k in (k for k in ACTION_KEYS if k in batch):
        a = batch[k][src.to(batch[k].device)]
        flipped = a.flip(1)
        out[k] = torch.where(reverse.to(a.device)[:, None, None], flipped, a)
    return out


class ControllabilityMonitor:
    def __init__(self, names: list[str], every: int, total_steps: int, seed: int):
        self.names, self.every, self.total, self.seed = names, every, total_steps, seed
        self.warned = False

    def due(self, step: int) -> bool:
        return self.every > 0 and step % self.every == 0

    @torch.no_grad()
    def measure(self, model, batch: dict[str, torch.Tensor], dataset: torch.Tensor, step: int) -> dict[str, float]:
        """-> TensorBoard scalars control/<name> (relative gap) and control/<name>_real, _shuffled (losses),
        summed over every rank's batch."""
        device = batch["frames"].device
        losses = []
        for acts in (batch, shuffled_actions(batch, dataset.cpu())):
            gen = torch.Generator(device=device).manual_seed(self.seed * 1_000_003 + step)  # same noise for both
            losses.append(model.losses(acts, generator=gen, drop_actions=False, rollout=True).double().cpu())
        n = len(self.names)
        sums = torch.zeros(3 * n, dtype=torch.float64)
        idx = dataset.cpu().long()
        sums[:n].index_add_(0, idx, losses[0])
        sums[n:2 * n].index_add_(0, idx, losses[1])
        sums[2 * n:].index_add_(0, idx, torch.ones_like(losses[0]))
        sums = all_reduce_(sums)
        out = {}
        for i, name in enumerate(self.names):
            c = sums[2 * n + i].item()
            if c > 0:
                real, shuf = sums[i].item() / c, sums[n + i].item() / c
                out[f"control/{name}"] = (shuf - real) / max(real, 1e-12)
                out[f"control/{name}_real"], out[f"control/{name}_shuffled"] = real, shuf
        return out

    def warning(self, step: int, scalars: dict[str, float]) -> str | None:
        """One warning, once, when past half the run some embodiment's gap is still ~0 (action use comes late)."""
        if self.warned or step < self.total / 2:
            return None
        flat = [n for n in self.names if f"control/{n}" in scalars and scalars[f"control/{n}"] < FLAT_GAP]
        if not flat:
            return None
        self.warned = True
        gaps = ", ".join(f"{n} {100 * scalars[f'control/{n}']:+.1f}%" for n in flat)
        return (f"warning: step {step}: the model is not using its actions on {', '.join(flat)}: the loss with shuffled "
                f"actions is within {100 * FLAT_GAP:.0f}% of the loss with the real ones ({gaps}); check the frame stride "
                f"(motion between frames), the action ranges and the tokenizer")

    @staticmethod
    def summary(scalars: dict[str, float]) -> str:
        """'ctrl a +12% b +3%' for the progress line."""
        gaps = {k[len("control/"):]: v for k, v in scalars.items()
                if k.startswith("control/") and not k.endswith(("_real", "_shuffled"))}
        return "ctrl " + " ".join(f"{n} {100 * v:+.0f}%" for n, v in gaps.items()) if gaps else ""
