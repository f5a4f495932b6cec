"""The world model's conditioning on each agent of a scene: one frame token and one vector term per agent.

The action encoder pools each agent's tokens on their own (action_encoder.py: a query per agent slot k over the
tokens of agent k, which carry agent k's embedding). Here each agent's summary becomes
- a token beside the frame's patch tokens (agent slot k's type added): patches attend to "what agent k did", and
  the patch where agent k is can take its motion from that token alone;
- a term added to the frame's conditioning vector, which feeds every patch (cond_in), the per-patch action field
  (position x action: "agent 0 moved up" becomes a change in the left half once one linear map has learned where
  agent 0 is drawn) and every block's adaLN. Agents the chunk does not have add nothing to the vector.
Dropped actions (classifier-free guidance) give every agent slot its learned null token and no vector term.

Slots, not agents, are the unit: a model built for max_agents = 8 takes any scene of 1..8 agents, and agent k of
a card is slot k (the tokenizer's agent token k), so a model trained on 2 and 3 agents meets slots 3 and 4 of a
4- or 5-agent scene with the embeddings that training left them (never trained: the agent-count test).
"""

from __future__ import annotations

import torch
from torch import nn


class AgentConditioning(nn.Module):
    def __init__(self, max_agents: int, action_width: int, width: int):
        super().__init__()
        self.max_agents = max_agents
        self.tokens = nn.Linear(action_width, width)
        self.vector = nn.Linear(action_width, width)
        self.slot_type = nn.Parameter(torch.zeros(max_agents, width))  # which agent slot a token speaks for
        self.null = nn.Parameter(torch.zeros(max_agents, width))  # the dropped action of each slot

    def init_weights(self) -> None:
        nn.init.normal_(self.slot_type, std=0.02)
        nn.init.normal_(self.null, std=0.02)

    def forward(self, pooled: torch.Tensor, agents: torch.Tensor | None, drop: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """pooled [B, F, A, Wa] each agent slot's summary; agents [B, F, P] each action token's agent (-1 none, None:
        all none); drop [B] bool or None -> (tokens [B, F, A, W], vector term [B, F, W])."""
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
        return tokens, vector
