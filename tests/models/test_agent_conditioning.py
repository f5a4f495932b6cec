"""The world model's agent conditioning (models/agents.py, action_encoder.py): off by default with exactly the
tensors of before, each agent slot pooled from its own tokens alone, and agent k's chunk read like agent 0's."""

from __future__ import annotations

import torch
from models.test_world_model import make_batch, tiny, wake

from unified_action.models import WorldModel
from unified_action.models.action_encoder import _within_agent


def agent_batch(cfg, agents: int = 2, B: int = 2) -> dict:
    """make_batch with its first 2 + agents * 4 tokens laid out as `agents` agents' chunks (agent token, 3 values)."""
    batch = make_batch(cfg, B=B, P=2 + agents * 4 + 1)
    ids = torch.full(batch["action_tokens"].shape, -1)
    for k in range(agents):
        ids[..., 2 + 4 * k: 6 + 4 * k] = k
    batch["action_mask"] = torch.ones_like(batch["action_mask"])
    batch["action_agents"] = ids
    return batch


def test_without_agents_the_model_has_exactly_its_former_tensors():
    plain, scene = WorldModel(tiny()), WorldModel(tiny(max_agents=8))
    extra = set(scene.state_dict()) - set(plain.state_dict())
    assert not any("agent" in k for k in plain.state_dict())
    assert extra == {"actions.agent.weight", "actions.agent_query", "agents.tokens.weight", "agents.tokens.bias",
                     "agents.vector.weight", "agents.vector.bias", "agents.slot_type", "agents.null"}


def test_a_chunk_of_one_agent_embeds_as_without_agents():
    """Row 0 of the agent table ("no agent") is zero and stays so: a one-agent chunk's pooled queries are those of a
    model without agents holding the same weights."""
    torch.manual_seed(0)
    scene = WorldModel(tiny(max_agents=8))
    plain = WorldModel(tiny())
    plain.load_state_dict({k: v for k, v in scene.state_dict().items() if k in plain.state_dict()})
    b = make_batch(scene.cfg)
    args = [b[k][:, :-1] for k in ("action_tokens", "action_mask", "action_slots", "action_steps")] + [b["embodiment"]]
    q_scene, per_agent = scene.actions(*args, agents=torch.full_like(b["action_slots"][:, :-1], -1))
    q_plain, none = plain.actions(*args)
    assert none is None and per_agent.shape[2] == 8
    torch.testing.assert_close(q_scene, q_plain)
    loss = scene(b)["loss"]
    loss.backward()
    assert scene.actions.agent.weight.grad[0].abs().max() == 0  # padding_idx: never trained away from zero


def test_each_agent_slot_pools_its_own_tokens_only():
    torch.manual_seed(0)
    model = wake(WorldModel(tiny(max_agents=8))).eval()
    b = agent_batch(model.cfg, agents=2)
    args = lambda x: ([x[k][:, :-1] for k in ("action_tokens", "action_mask", "action_slots", "action_steps")]  # noqa: E731
                      + [x["embodiment"]])
    _, before = model.actions(*args(b), agents=b["action_agents"][:, :-1])
    changed = {k: v.clone() for k, v in b.items()}
    changed["action_tokens"][..., 7:10] = changed["action_tokens"][..., 7:10].flip(0) + 1  # agent 1's values only
    _, after = model.actions(*args(changed), agents=changed["action_agents"][:, :-1])
    torch.testing.assert_close(after[:, :, 0], before[:, :, 0])  # agent 0's summary does not see agent 1's tokens
    assert not torch.allclose(after[:, :, 1], before[:, :, 1])
    torch.testing.assert_close(after[:, :, 2:], before[:, :, 2:])  # absent agents: the null key alone
    with torch.no_grad():
        cond = model.conditioning(b)
    assert cond.tokens.shape[2] == model.cfg.action_queries + 8  # a token per agent slot beside the pooled queries


def test_agent_k_counts_its_positions_as_agent_0_does():
    agents = torch.tensor([[-1, -1, 0, 0, 0, 1, 1, 1, 2, 2, 2, -1]])
    assert _within_agent(agents, torch.arange(12)).tolist() == [[0, 1, 2, 3, 4, 2, 3, 4, 2, 3, 4, 11]]
