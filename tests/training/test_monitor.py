"""The controllability monitor: shuffles actions within an embodiment, sees a model that ignores them, warns."""

from __future__ import annotations

import torch
from models.test_world_model import make_batch, tiny, wake

from unified_action.models import WorldModel
from unified_action.training.monitor import ControllabilityMonitor, shuffled_actions


def test_actions_are_shuffled_within_an_embodiment_and_a_lone_clip_is_reversed():
    batch = {k: torch.arange(4)[:, None, None].expand(4, 3, 2) * 10 + torch.arange(3)[None, :, None]
             for k in ("action_tokens", "action_mask", "action_slots", "action_steps")}
    batch["frames"] = torch.zeros(4)
    out = shuffled_actions(batch, torch.tensor([0, 0, 1, 0]))
    firsts = out["action_tokens"][:, 0, 0].tolist()
    assert firsts[0] == 10 and firsts[1] == 30 and firsts[3] == 0  # clips 0, 1, 3 (dataset 0) take the next one's
    assert out["action_tokens"][2, :, 0].tolist() == [22, 21, 20]  # alone of dataset 1: its own chunks reversed
    assert out["frames"] is batch["frames"]


def test_a_model_that_ignores_its_actions_shows_no_gap_and_is_warned_about():
    torch.manual_seed(0)
    model = WorldModel(tiny())  # untrained: exactly copy-last, whatever the actions
    batch = make_batch(model.cfg, B=4)
    dataset = torch.tensor([0, 0, 1, 1])
    monitor = ControllabilityMonitor(["a", "b"], every=10, total_steps=100, seed=0)
    rng = torch.random.get_rng_state()
    flat = monitor.measure(model, batch, dataset, step=10)
    assert torch.equal(rng, torch.random.get_rng_state())  # the training RNG (and exact resume) untouched
    assert flat["control/a"] == 0 and flat["control/b"] == 0 and flat["control/a_real"] > 0
    assert monitor.warning(40, flat) is None  # too early to tell
    text = monitor.warning(60, flat)
    assert "not using its actions on a, b" in text and monitor.warning(70, flat) is None  # once
    assert monitor.summary(flat) == "ctrl a +0% b +0%"


def test_a_model_that_uses_its_actions_shows_a_gap():
    torch.manual_seed(0)
    model = wake(WorldModel(tiny()), std=0.2)
    batch = make_batch(model.cfg, B=4)
    monitor = ControllabilityMonitor(["a"], every=10, total_steps=100, seed=0)
    gap = monitor.measure(model, batch, torch.zeros(4, dtype=torch.long), step=10)
    assert gap["control/a"] != 0 and gap["control/a_shuffled"] != gap["control/a_real"]
    assert monitor.due(20) and not monitor.due(25)
