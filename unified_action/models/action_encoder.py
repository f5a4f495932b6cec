"""Per-frame action embedding: one frame's action-token chunk -> a few pooled action vectors, by attention.

Every token is the sum of five embeddings:
- its id, in the ONE shared vocabulary (vocabulary.py): bin, binary and category tokens mean the same for
  every embodiment, so they share rows across robots, games and vehicles; a `fast` tokenizer's BPE block
  is its embodiment's alone;
- its VALUE: a bin token's bin centre and a binary token's state (-1/+1) as Fourier features through a
  small MLP. A per-id table must learn each of 256 bins of every slot separately from the data that
  happens to hit it; the value features give neighbouring bins neighbouring embeddings from step 0, so
  "a little more to the left" means something before training has seen that exact bin;
- its slot id + 1 (-1, "not a value token", becomes row 0): a bin token for the gripper and one for the
  steering wheel get different embeddings, though they share a bin id;
- its time step + 1 within the chunk, clamped to the table (-1 becomes row 0);
- its position in the sequence: BPE pieces carry no slot or step, and their order (low DCT frequencies
  first) is all that tells them apart;
plus the clip's embodiment token, embedded by the same token table (embodiment ids live in the vocabulary).

A few learned queries then attend over the frame's tokens, padding excluded by the mask. A learned
always-visible "null" key keeps a frame whose mask is all False (no tokens) well defined instead of a
softmax over nothing (NaN).

A scene with several agents (max_agents > 0): each token also gets its agent's embedding (agent index + 1; row 0,
"no agent", stays zero, so a chunk of one agent embeds exactly as without), and one more query per agent slot k
(a shared query plus agent k's embedding) attends over agent k's tokens alone: a summary per agent, which the
world model turns into that agent's frame token and action field (models/agents.py). An agent the chunk does not
have attends to the null key only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from unified_action.errors import UnifiedActionError
from unified_action.tokenization.vocabulary import BIN_BASE, NUM_BINS, SECTIONS

SLOT_CAPACITY = next(s.size for s in SECTIONS if s.name == "slot")  # slot ids are 0..4095 (action_space.py)
MAX_STEPS = 64  # steps per chunk with their own embedding; longer chunks share the last row
VALUE_OCTAVES = 6  # Fourier features of a value in [-1, 1]: periods 2 .. 1/16, finer than 8 bins apart
BINARY_BASE = next(s.start for s in SECTIONS if s.name == "binary")


def token_values(vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(value [V], has_value [V]) of every token id: a bin's centre in [-1, 1], a binary token's -1 (off) / +1 (on);
    every other id has none (its id embedding is all there is)."""
    value, has = torch.zeros(vocab_size), torch.zeros(vocab_size)
    bins = torch.arange(BIN_BASE, max(BIN_BASE, min(BIN_BASE + NUM_BINS, vocab_size)))
    value[bins] = -1.0 + (bins - BIN_BASE + 0.5).float() * (2.0 / NUM_BINS)
    has[bins] = 1.0
    for state, tok in enumerate(range(BINARY_BASE, min(BINARY_BASE + 2, vocab_size))):
        value[tok], has[tok] = 2.0 * state - 1.0, 1.0
    return value, has


def value_features(value: torch.Tensor) -> torch.Tensor:
    """[...] values -> [..., 1 + 2 * VALUE_OCTAVES]: the value and sin/cos of pi * 2^k * value."""
    freqs = math.pi * 2.0 ** torch.arange(VALUE_OCTAVES, device=value.device, dtype=torch.float32)
    a = value.float()[..., None] * freqs
    return torch.cat([value.float()[..., None], torch.sin(a), torch.cos(a)], dim=-1)


class ActionEncoder(nn.Module):
    def __init__(self, vocab_size: int, width: int, heads: int, max_tokens: int, queries: int, max_agents: int = 0):
        super().__init__()
        self.heads, self.queries, self.max_agents = heads, queries, max_agents
        self.token = nn.Embedding(vocab_size, width)
        self.value = nn.Sequential(nn.Linear(1 + 2 * VALUE_OCTAVES, width), nn.SiLU(), nn.Linear(width, width))
        self._set_value_table(vocab_size)
        self.slot = nn.Embedding(SLOT_CAPACITY + 1, width)
        self.step = nn.Embedding(MAX_STEPS + 1, width)
        self.position = nn.Embedding(max_tokens, width)
        self.norm = nn.LayerNorm(width)
        self.query = nn.Parameter(torch.zeros(queries, width))
        self.null = nn.Parameter(torch.zeros(1, width))
        self.q_proj = nn.Linear(width, width)
        self.kv_proj = nn.Linear(width, 2 * width)
        if max_agents:  # only then: exports without agents keep exactly their tensors
            self.agent = nn.Embedding(max_agents + 1, width, padding_idx=0)
            self.agent_query = nn.Parameter(torch.zeros(width))

    def _set_value_table(self, vocab_size: int) -> None:
        # derived from the vocabulary layout, not learned: kept out of the state dict
        value, has = token_values(vocab_size)
        device = self.token.weight.device
        self.register_buffer("token_value", value.to(device), persistent=False)
        self.register_buffer("token_has_value", has.to(device), persistent=False)

    def init_weights(self) -> None:
        for emb in (self.token, self.slot, self.step, self.position):
            nn.init.normal_(emb.weight, std=0.02)
        nn.init.normal_(self.query, std=0.02)
        nn.init.normal_(self.null, std=0.02)
        if self.max_agents:
            nn.init.normal_(self.agent.weight, std=0.02)
            with torch.no_grad():
                self.agent.weight[0].zero_()  # "no agent": a chunk of one agent embeds as without agents
            nn.init.normal_(self.agent_query, std=0.02)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, slots: torch.Tensor, steps: torch.Tensor,
                embodiment: torch.Tensor, agents: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """tokens, mask, slots, steps, agents [B, F, P] (agents: each token's agent index, -1 for none; None: all -1);
        embodiment [B] token ids -> (pooled [B, F, queries, width], per agent [B, F, max_agents, width] or None when
        the encoder has no agents)."""
        B, Fr, P = tokens.shape
        room = self.position.num_embeddings
        if room < P:
            raise UnifiedActionError(f"model: action chunks of {P} tokens, the model has room for {room} "
                                     f"(max_action_tokens)")
        pos = torch.arange(P, device=tokens.device)
        if self.max_agents and agents is not None:  # a token of agent k: its place within k's chunk, as for agent 0
            pos = _within_agent(agents.long(), pos)
        h = (self.token(tokens) + self.slot((slots.long() + 1).clamp(0, SLOT_CAPACITY))
             + self.step((steps.long() + 1).clamp(0, MAX_STEPS)) + self.position(pos)
             + self.token(embodiment.long())[:, None, None])
        tok = tokens.long()
        h = h + self.value(value_features(self.token_value[tok]).to(h.dtype)) * self.token_has_value[tok, None].to(h.dtype)
        if self.max_agents:
            agent = (agents.long() + 1).clamp(0, self.max_agents) if agents is not None else torch.zeros_like(tok)
            h = h + self.agent(agent)
        h = self.norm(h).reshape(B * Fr, P, -1)
        h = torch.cat([self.null.expand(B * Fr, 1, -1).to(h.dtype), h], dim=1)  # [B*F, 1+P, W]
        keep = torch.cat([mask.new_ones(B, Fr, 1), mask], dim=2).reshape(B * Fr, 1, 1, P + 1).bool()

        W, H = h.shape[-1], self.heads
        k, v = self.kv_proj(h).reshape(B * Fr, P + 1, 2, H, W // H).permute(2, 0, 3, 1, 4)
        q = self.q_proj(self.query.to(h.dtype)).reshape(1, self.queries, H, W // H).transpose(1, 2)
        q = q.expand(B * Fr, -1, -1, -1)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)  # [B*F, H, Q, W/H]: padding never attended
        pooled = o.transpose(1, 2).reshape(B, Fr, self.queries, W)
        if not self.max_agents:
            return pooled, None
        A = self.max_agents
        ids = agents.long() if agents is not None else torch.full_like(tokens, -1, dtype=torch.long)
        own = (ids[:, :, None, :] == torch.arange(A, device=ids.device)[None, None, :, None]) & mask[:, :, None].bool()
        keep_a = torch.cat([own.new_ones(B, Fr, A, 1), own], dim=3).reshape(B * Fr, 1, A, P + 1)
        qa = self.q_proj((self.agent_query + self.agent.weight[1:]).to(h.dtype)).reshape(1, A, H, W // H).transpose(1, 2)
        oa = F.scaled_dot_product_attention(qa.expand(B * Fr, -1, -1, -1), k, v, attn_mask=keep_a)  # agent k: its tokens
        return pooled, oa.transpose(1, 2).reshape(B, Fr, A, W)

    def resize_positions(self, max_tokens: int) -> None:
        """Room for `max_tokens` tokens per chunk, keeping the existing position rows (a new embodiment's chunks may be longer)."""
        self.position = _grown(self.position, max_tokens)

    def resize(self, vocab_size: int) -> None:
        """Grow the token table to `vocab_size` rows, keeping the existing rows (new ids start near zero)."""
        self.token = _grown(self.token, vocab_size)
        self._set_value_table(vocab_size)


def _within_agent(agents: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Positions [B, F, P] where each agent's tokens (its agent token, then its values) count from where agent 0's
    start (position 2, after <bos> <embodiment>): the agent embedding says whose they are, so agent k's tokens share
    agent 0's position rows, and a scene with more agents than any trained one still has every row it needs.
    Tokens of no agent keep their place."""
    new_run = (agents >= 0) & torch.cat([torch.ones_like(agents[..., :1], dtype=torch.bool),
                                          agents[..., 1:] != agents[..., :-1]], -1)
    start = torch.cummax(torch.where(new_run, pos, torch.zeros_like(pos)), dim=-1).values
    return torch.where(agents >= 0, 2 + pos - start, pos.expand_as(agents))


def _grown(emb: nn.Embedding, rows: int) -> nn.Embedding:
    """A copy of `emb` with `rows` rows: the existing ones kept, the new ones initialised as at construction."""
    old = emb.weight
    new = nn.Embedding(rows, old.shape[1], device=old.device, dtype=old.dtype)
    with torch.no_grad():
        nn.init.normal_(new.weight, std=0.02)
        new.weight[:old.shape[0]] = old
    return new
