"""The world model's agent conditioning (models/agents.py, action_encoder.py): off by default with exactly the
tensors of before, each agent slot pooled from its own tokens alone, and agent k's chunk read like agent 0's."""

from __future__ import annotations

import torch
from models.test_world_model import make_batch, tiny, wake

from unified_action.models import ModelConfig, WorldModel
from unified_action.models.action_encoder import _within_agent
from unified_action.models.agents import FIELD_REACH


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
                     "agents.vector.weight", "agents.vector.bias", "agents.slot_type", "agents.null",
                     *(f"agents.{m}.{w}" for m in ("field_act", "gate_pixels", "gate_position", "spread")
                       for w in ("weight", "bias"))}


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


def test_the_agent_field_moves_the_patches_that_show_the_agent_and_their_neighbours_only():
    """A gate that reads "agent 0 is here" from red pixels: agent 0's actions change the term at the red patch and
    the patches within two of it (FIELD_REACH) and nowhere else; agent 1, drawn nowhere, changes nothing; a dropped
    clip has no field."""
    torch.manual_seed(0)
    model = wake(WorldModel(tiny(max_agents=8))).eval()
    field = model.agents
    p = model.cfg.patch_size
    with torch.no_grad():
        field.gate_position.weight.zero_()
        field.gate_position.bias.zero_()
        field.gate_pixels.weight.zero_()
        field.gate_pixels.bias.zero_()
        field.gate_pixels.bias[-1] = 30.0  # "no agent here" unless the pixels say otherwise
        field.gate_pixels.weight[0, : p * p] = 1.0  # red minus green in the patch (C, p, p order): agent 0
        field.gate_pixels.weight[0, p * p: 2 * p * p] = -1.0
        field.spread.weight.normal_()  # the neighbours get their share
    b = agent_batch(model.cfg, agents=2)
    b["frames"][:] = 255
    b["frames"][:, :, 0:p, 0:p] = torch.tensor([255, 0, 0], dtype=torch.uint8)  # a red patch at (0, 0)
    grid = model.cfg.image_size[0] // p, model.cfg.image_size[1] // p
    assert grid == (4, 4) and FIELD_REACH == 5  # so (0, 0) reaches rows and columns 0..2, and not 3

    def term(batch: dict, drop: bool = False) -> torch.Tensor:
        prev = model.patchify(batch["frames"][:, :-1].float().movedim(-1, -3) / 127.5 - 1)
        cond = model.conditioning(batch, torch.full((2,), drop))
        return field.field(prev, model.pos_embed, cond.agent_actions, grid)  # [B, F, N, W]

    with torch.no_grad():
        before = term(b)
        moved0 = {k: v.clone() for k, v in b.items()}
        moved0["action_tokens"][..., 3:6] = moved0["action_tokens"][..., 3:6].flip(0) + 1  # agent 0's values
        moved1 = {k: v.clone() for k, v in b.items()}
        moved1["action_tokens"][..., 7:10] = moved1["action_tokens"][..., 7:10].flip(0) + 1  # agent 1's values
        change0 = (term(moved0) - before).abs().amax(dim=(0, 1, 3)).reshape(grid)
        change1 = (term(moved1) - before).abs().amax()
        dropped = term(b, drop=True).abs().amax()
    near = torch.zeros(grid, dtype=torch.bool)
    near[0:3, 0:3] = True
    assert (change0[near] > 1e-4).all() and (change0[~near] < 1e-6).all()
    assert change1 < 1e-6 and dropped == 0


def test_exports_from_before_the_agent_field_load_without_it():
    cfg = tiny(max_agents=8)
    older = {k: v for k, v in cfg.to_dict().items() if k != "agent_field"}
    old = WorldModel(ModelConfig.from_dict(older))
    assert cfg.agent_field and not old.cfg.agent_field
    assert not any(k.startswith(("agents.gate", "agents.spread", "agents.field")) for k in old.state_dict())
    assert old.conditioning(agent_batch(old.cfg)).agent_actions is None


def test_the_agent_field_reads_the_chunk_before_too():
    """Frame f's field carries agent 0's chunk f-1 and chunk f-2 (momentum): changing agent 0's values in the first
    chunk alone changes the field's actions of the first two predicted frames and of no later one."""
    torch.manual_seed(0)
    model = WorldModel(tiny(max_agents=8)).eval()
    b = agent_batch(model.cfg, agents=2)
    changed = {k: v.clone() for k, v in b.items()}
    changed["action_tokens"][:, 0, 3:6] = changed["action_tokens"][:, 0, 3:6].flip(0) + 1  # agent 0, chunk 0 only
    with torch.no_grad():
        diff = (model.conditioning(changed).agent_actions - model.conditioning(b).agent_actions).abs().amax(dim=(0, 3))
    assert (diff[:2, 0] > 1e-4).all() and (diff[2:, 0] < 1e-6).all() and (diff[:, 1:] < 1e-6).all()
