"""Per-frame action embedding: one frame's action-token chunk -> one conditioning vector, by attention pooling.

Every token is the sum of four embeddings:
- its id, in the ONE shared vocabulary (vocabulary.py): bin, binary and category tokens mean the same for
  every embodiment, so they share rows across robots, games and vehicles; a `fast` tokenizer's BPE block
  is its embodiment's alone;
- its slot id + 1 (-1, "not a value token", becomes row 0): a bin token for the gripper and one for the
  steering wheel get different embeddings, though they share a bin id;
- its time step + 1 within the chunk, clamped to the table (-1 becomes row 0);
- its position in the sequence: BPE pieces carry no slot or step, and their order (low DCT frequencies
  first) is all that tells them apart;
plus the clip's embodiment token, embedded by the same token table (embodiment ids live in the vocabulary).

A few learned queries then attend over the frame's tokens, padding excluded by the mask, and their outputs
are projected to one vector. A learned always-visible "null" key keeps a frame whose mask is all False
(no tokens) well defined instead of a softmax over nothing (NaN).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unified_action.errors import UnifiedActionError
from unified_action.tokenization.vocabulary import SECTIONS

SLOT_CAPACITY = next(s.size for s in SECTIONS if s.name == "slot")  # slot ids are 0..4095 (action_space.py)
MAX_STEPS = 64  # steps per chunk with their own embedding; longer chunks share the last row


class ActionEncoder(nn.Module):
    def __init__(self, vocab_size: int, width: int, out_width: int, heads: int, max_tokens: int, queries: int):
        super().__init__()
        self.heads, self.queries = heads, queries
        self.token = nn.Embedding(vocab_size, width)
        self.slot = nn.Embedding(SLOT_CAPACITY + 1, width)
        self.step = nn.Embedding(MAX_STEPS + 1, width)
        self.position = nn.Embedding(max_tokens, width)
        self.norm = nn.LayerNorm(width)
        self.query = nn.Parameter(torch.zeros(queries, width))
        self.null = nn.Parameter(torch.zeros(1, width))
        self.q_proj = nn.Linear(width, width)
        self.kv_proj = nn.Linear(width, 2 * width)
        self.out = nn.Linear(queries * width, out_width)

    def init_weights(self) -> None:
        for emb in (self.token, self.slot, self.step, self.position):
            nn.init.normal_(emb.weight, std=0.02)
        nn.init.normal_(self.query, std=0.02)
        nn.init.normal_(self.null, std=0.02)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, slots: torch.Tensor, steps: torch.Tensor,
                embodiment: torch.Tensor) -> torch.Tensor:
        """tokens, mask, slots, steps [B, F, P]; embodiment [B] token ids -> [B, F, out_width]."""
        B, Fr, P = tokens.shape
        room = self.position.num_embeddings
        if room < P:
            raise UnifiedActionError(f"model: action chunks of {P} tokens, the model has room for {room} "
                                     f"(max_action_tokens)")
        pos = torch.arange(P, device=tokens.device)
        h = (self.token(tokens) + self.slot((slots.long() + 1).clamp(0, SLOT_CAPACITY))
             + self.step((steps.long() + 1).clamp(0, MAX_STEPS)) + self.position(pos)
             + self.token(embodiment.long())[:, None, None])
        h = self.norm(h).reshape(B * Fr, P, -1)
        h = torch.cat([self.null.expand(B * Fr, 1, -1).to(h.dtype), h], dim=1)  # [B*F, 1+P, W]
        keep = torch.cat([mask.new_ones(B, Fr, 1), mask], dim=2).reshape(B * Fr, 1, 1, P + 1).bool()

        W, H = h.shape[-1], self.heads
        k, v = self.kv_proj(h).reshape(B * Fr, P + 1, 2, H, W // H).permute(2, 0, 3, 1, 4)
        q = self.q_proj(self.query.to(h.dtype)).reshape(1, self.queries, H, W // H).transpose(1, 2)
        q = q.expand(B * Fr, -1, -1, -1)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)  # [B*F, H, Q, W/H]: padding never attended
        return self.out(o.transpose(1, 2).reshape(B, Fr, self.queries * W))

    def resize_positions(self, max_tokens: int) -> None:
        """Room for `max_tokens` tokens per chunk, keeping the existing position rows (a new embodiment's chunks may be longer)."""
        self.position = _grown(self.position, max_tokens)

    def resize(self, vocab_size: int) -> None:
        """Grow the token table to `vocab_size` rows, keeping the existing rows (new ids start near zero)."""
        self.token = _grown(self.token, vocab_size)


def _grown(emb: nn.Embedding, rows: int) -> nn.Embedding:
    """A copy of `emb` with `rows` rows: the existing ones kept, the new ones initialised as at construction."""
    old = emb.weight
    new = nn.Embedding(rows, old.shape[1], device=old.device, dtype=old.dtype)
    with torch.no_grad():
        nn.init.normal_(new.weight, std=0.02)
        new.weight[:old.shape[0]] = old
    return new
