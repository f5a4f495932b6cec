"""Per-agent evaluation of a scene with several agents: swap ONE agent's actions, see what changes and where.

For each agent k, every held-out clip is rolled out again with agent k's actions taken from the partner clip (the
clip of another episode whose actions the whole-clip counterfactual uses) and every other agent's its own:
- dpsnr: PSNR(real actions) - PSNR(agent k swapped), against the real future: does agent k's action matter;
- action_accuracy (simulator cards): the simulator stepped under the same swap (truth.py), and the share of clip
  steps where the swapped rollout is closer to that truth than to the real future;
- attribution (cards that give agent k a `region`): how the change the swap makes (mean squared difference of the
  two rollouts) splits between agent k's region and the rest of the frame: `attribution` = mean squared change per
  pixel inside / outside (>= 5: the change lands where agent k is), `share` = the part of the summed change that
  lands inside.
The swap is made on tokens: agent k's chunk sits at the same positions in every clip of a tokenizer (agents.py of
tokenization), so those positions take the partner's tokens; the simulator's truth swaps the same agent's native
values (the card's fields of agent k).
"""

from __future__ import annotations

import numpy as np

from unified_action.evaluation import metrics as M
from unified_action.models.batch import ACTION_KEYS


def swap_agent(acts: dict[str, np.ndarray], partner: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
    """ACTION_KEYS arrays [N, F, P] with agent k's tokens (positions where action_agents == k) from `partner`."""
    mine = acts["action_agents"] == k
    return {key: np.where(mine, partner[key], acts[key]) for key in ACTION_KEYS}


def region_mask(region, size: tuple[int, int]) -> np.ndarray:
    """A card's Region (fractions of the frame) -> bool [h, w]."""
    h, w = size
    m = np.zeros((h, w), bool)
    m[round(region.top * h): round(region.bottom * h), round(region.left * w): round(region.right * w)] = True
    return m


def attribution(gen: np.ndarray, swapped: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Rollouts uint8 [N, H, h, w, 3] under the real and the swapped actions -> (mean squared change per pixel
    inside the mask / outside it, share of the summed change inside)."""
    change = ((gen.astype(np.float32) - swapped.astype(np.float32)) ** 2).mean(-1)  # [N, H, h, w]
    inside, outside = change[..., mask].sum(), change[..., ~mask].sum()
    per_in, per_out = inside / max(mask.sum(), 1), outside / max((~mask).sum(), 1)
    total = inside + outside
    return (float(per_in / per_out) if per_out > 0 else float("inf") if per_in > 0 else float("nan"),
            float(inside / total) if total > 0 else float("nan"))


def evaluate_agents(model, ds, tok, data: dict, pool: dict, partner: list[int | None], roll: dict, *,
                    gen_all: np.ndarray, examples: int, aspect: str, progress_note: list[str]) -> tuple[dict, list]:
    """Every agent of `tok` swapped in turn -> ({agent: {"dpsnr": [N, H], "action_accuracy": [N, H], "attribution",
    "share"}}, [(agent, Example)] strips). `roll`: rollouts.batch_rollout's settings; `gen_all`: the rollouts under
    the real actions (batch_rollout gives the swapped ones the same noise)."""
    from unified_action.evaluation.rollouts import ROLLOUT_BATCH, Example, batch_rollout
    from unified_action.evaluation.truth import has_simulator, simulator_truth, truth_metrics

    C, H = roll["C"], roll["H"]

    N = len(data["key"])
    frames = data["frames"]
    real = frames[:, C:]
    has = np.array([p is not None for p in partner])
    src = np.array([p if p is not None else 0 for p in partner])
    other = {k: pool[k][src] for k in ACTION_KEYS}
    keys, partner_keys = data["key"], [pool["key"][p] if p is not None else None for p in partner]
    agents_card = {a.name: a for a in (ds.card.header.agents or [])}
    out, strips = {}, []
    for k, name in enumerate(tok.agents):
        swapped_acts = swap_agent({key: data[key] for key in ACTION_KEYS}, other, k)
        sw = np.zeros_like(real)
        for s in range(0, N, ROLLOUT_BATCH):
            idx = np.arange(s, min(N, s + ROLLOUT_BATCH))
            sw[idx] = batch_rollout(model, data, idx, {key: v[idx] for key, v in swapped_acts.items()}, **roll)
        dpsnr = np.where(has[:, None], M.psnr(real, gen_all) - M.psnr(real, sw), np.nan)
        accuracy = np.full((N, H), np.nan)
        truth = ok = None
        if has_simulator(ds) and has.any():
            truth, ok, notes = simulator_truth(ds, keys, partner_keys, frames[:, C - 1], C, int(data["frame_stride"][0]), H,
                                               tuple(model.cfg.image_size), aspect, swap_agent=k)
            progress_note += [f"agent {name}: {n}" for n in notes]
            if ok.any():
                accuracy[ok] = truth_metrics(real[ok], sw[ok], truth[ok], np.repeat(frames[ok, C - 1:C], H, axis=1))["action_accuracy"]
        region = agents_card[name].region if name in agents_card else None
        ratio, share = attribution(gen_all[has], sw[has], region_mask(region, real.shape[2:4])) if region is not None and has.any() \
            else (float("nan"), float("nan"))
        out[name] = {"dpsnr": dpsnr, "action_accuracy": accuracy, "attribution": ratio, "share": share}
        for j in range(min(examples, N)):
            if has[j]:
                strips.append((name, Example(f"{keys[j]} ({name} swapped)", frames[j, :C], real[j], gen_all[j], sw[j],
                                             partner_keys[j], truth[j] if ok is not None and ok[j] else None)))
    return out, strips
