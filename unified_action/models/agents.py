"""The world model's conditioning on each agent of a scene: a frame token, a vector term and a per-patch field per agent.

The action encoder pools each agent's tokens on their own (action_encoder.py: a query per agent slot k over the
tokens of agent k, which carry agent k's embedding). Here each agent's summary becomes
- a token beside the frame's patch tokens (agent slot k's type added): patches attend to "what agent k did", and
  the patch where agent k is can take its motion from that token alone;
- a term added to the frame's conditioning vector, which feeds every patch (cond_in), the per-patch action field
  (position x action: "agent 0 moved up" becomes a change in the left half once one linear map has learned where
  agent 0 is drawn) and every block's adaLN. Agents the chunk does not have add nothing to the vector.
- with `field` (the agent field): a per-patch term keyed on what the patch SHOWS. A gate per patch over "agent k is
  drawn here" (k = 0..A-1, or none: a softmax of a linear map of the previous frame's pixels in the patch and of its
  position) weighs each agent's projected actions, this chunk's and the one before (an agent with momentum moves as
  much by its last push as by this one), and a depthwise 5x5 filter over the patch grid hands the result to the
  patches within two of it (where a moving object arrives). Where agents move anywhere (simple_spread's discs, told
  apart only by colour, move 6 px a frame at the median, 14 at p90), "this patch shows agent k, so it moves with
  agent k's actions" is then one linear map of the pixels, where the frame tokens leave it to attention to find the
  token whose slot matches the colour; where agents stay in their place (pong's paddles), the position half of the
  gate does it.
Dropped actions (classifier-free guidance) give every agent slot its learned null token, no vector term and no field.

Slots, not agents, are the unit: a model built for max_agents = 8 takes any scene of 1..8 agents, and agent k of
a card is slot k (the tokenizer's agent token k), so a model trained on 2 and 3 agents meets slots 3 and 4 of a
4- or 5-agent scene with the embeddings that training left them (never trained: the agent-count test).
"""

from __future__ import annotations

import torch
from torch import nn

FIELD_REACH = 5  # patches: the agent field's filter is FIELD_REACH x FIELD_REACH (two patches each way)


class AgentConditioning(nn.Module):
    def __init__(self, max_agents: int, action_width: int, width: int, patch_features: int = 0, field: bool = False):
        super().__init__()
        self.max_agents = max_agents
        self.tokens = nn.Linear(action_width, width)
        self.vector = nn.Linear(action_width, width)
        self.slot_type = nn.Parameter(torch.zeros(max_agents, width))  # which agent slot a token speaks for
        self.null = nn.Parameter(torch.zeros(max_agents, width))  # the dropped action of each slot
        self.has_field = field
        if field:
            self.field_act = nn.Linear(2 * action_width, width)  # this chunk's summary and the one before
            self.gate_pixels = nn.Linear(patch_features, max_agents + 1)  # the last column: no agent in this patch
            self.gate_position = nn.Linear(width, max_agents + 1)
            self.spread = nn.Conv2d(width, width, FIELD_REACH, padding=FIELD_REACH // 2, groups=width)

    def init_weights(self) -> None:
        nn.init.normal_(self.slot_type, std=0.02)
        nn.init.normal_(self.null, std=0.02)
        if self.has_field:  # the field starts where the agent is drawn; training hands it to the neighbours
            with torch.no_grad():
                self.spread.weight.zero_()
                self.spread.weight[:, :, FIELD_REACH // 2, FIELD_REACH // 2] = 1.0
                self.spread.bias.zero_()

    def forward(self, pooled: torch.Tensor, agents: torch.Tensor | None, drop: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """pooled [B, F, A, Wa] each agent slot's summary; agents [B, F, P] each action token's agent (-1 none, None:
        all none); drop [B] bool or None -> (tokens [B, F, A, W], vector term [B, F, W], the field's per-agent actions
        [B, F, A, W] (zero for an agent the chunk does not have or a dropped clip; None without the field))."""
        B, Fr, A, _ = pooled.shape
        if agents is None:
            present = pooled.new_zeros(B, Fr, A)
        else:
            ids = torch.arange(A, device=agents.device)
            present = (agents.long()[:, :, None, :] == ids[None, None, :, None]).any(-1).to(pooled.dtype)
        tokens = self.tokens(pooled) + self.slot_type.to(pooled.dtype)
        vector = (self.vector(pooled) * present[..., None]).sum(2)
        if drop is not None:
            d = drop.to(pooled.dtype)[:, None, None]
            tokens = tokens * (1 - d[..., None]) + (self.null + self.slot_type).to(pooled.dtype) * d[..., None]
            vector = vector * (1 - d)
        field = None
        if self.has_field:  # a clip's first chunk has none before it: zeros (the layer's bias stands for them)
            before = torch.cat([torch.zeros_like(pooled[:, :1]), pooled[:, :-1]], 1)
            keep = present if drop is None else present * (1 - drop.to(pooled.dtype))[:, None, None]
            field = self.field_act(torch.cat([pooled, before], -1)) * keep[..., None]
        return tokens, vector, field

    def field(self, prev_patches: torch.Tensor, positions: torch.Tensor, actions: torch.Tensor, grid: tuple[int, int]
              ) -> torch.Tensor:
        """The agent field: prev_patches [B, F, N, C] the previous frame's pixels per patch, positions [N, W] the patch
        position embedding, actions [B, F, A, W] (forward's third output) -> a per-patch term [B, F, N, W]."""
        B, Fr, N, _ = prev_patches.shape
        gate = (self.gate_pixels(prev_patches) + self.gate_position(positions)).softmax(-1)[..., :-1]  # [B, F, N, A]
        here = torch.einsum("bfna,bfaw->bfnw", gate, actions)
        h, w = grid
        grid_maps = here.reshape(B * Fr, h, w, -1).permute(0, 3, 1, 2)
        return self.spread(grid_maps).permute(0, 2, 3, 1).reshape(B, Fr, N, -1)
