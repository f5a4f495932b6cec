"""ONE token id space shared by every embodiment: its versioned layout, and the ids allocated so far.

Layout version 2 (ids are half-open ranges; every fixed section has room to grow inside its capacity). Version 1
had no agent section (its ids were reserved): every id of version 1 means the same in version 2, so a tokenizer
or export of version 1 reads unchanged.

| section      | first id | size  | what                                                                  |
|--------------|---------:|------:|-----------------------------------------------------------------------|
| special      |        0 |    16 | <pad> <bos> <eos> <unk> <sep> <mask>, the rest reserved               |
| embodiment   |       16 |  1024 | one per embodiment name, allocated at registration                    |
| slot         |     1040 |  4096 | SLOT_BASE + slot id of action_space.py: the slot embedding of a value |
| bin          |     5136 |   256 | uniform bins over a normalized value in [-1, 1]                       |
| binary       |     5392 |     2 | button/flag state: off, on                                            |
| category     |     5394 |   256 | class index of a categorical slot (keyboard keys use all 256)         |
| agent        |     5650 |     8 | agent k of a scene with several agents (v2): frames its chunk         |
| (reserved)   |     5658 |  2534 | room for fixed sections of later layout versions                     |
| bpe          |     8192 |  open | one block per `fast` tokenizer, appended at registration             |

A chunk of actions encodes as `<bos> <embodiment> payload <eos> <pad>...` (see tokenizer.py); a scene with
several agents as `<bos> <embodiment> <agent 0> payload_0 <agent 1> payload_1 ... <eos> <pad>...`. Ids in the
fixed sections mean the same for every embodiment, so the world model shares their embeddings; an
embodiment's BPE block belongs to it alone. Registration only ever appends (a new embodiment id, a new
BPE block), so ids and encodings of registered tokenizers never change. An id is only free again once no
registered tokenizer uses it (its last tokenizer was replaced with `--force` under another embodiment).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from unified_action.cards.schema import MAX_AGENTS  # agents of one scene: the agent section's size
from unified_action.errors import RegistryError

VOCAB_VERSION = 2
READABLE_VOCAB_VERSIONS = (1, 2)  # layouts whose ids mean the same as today's (each version only appends a section)

PAD, BOS, EOS, UNK, SEP, MASK = range(6)
SPECIAL_NAMES = ("<pad>", "<bos>", "<eos>", "<unk>", "<sep>", "<mask>")


@dataclass(frozen=True)
class Section:
    name: str
    start: int
    size: int  # 0 for the open-ended last section

    @property
    def stop(self) -> int:
        return self.start + self.size


SECTIONS = (
    Section("special", 0, 16),
    Section("embodiment", 16, 1024),
    Section("slot", 1040, 4096),
    Section("bin", 5136, 256),
    Section("binary", 5392, 2),
    Section("category", 5394, 256),
    Section("agent", 5650, 8),
    Section("reserved", 5658, 2534),
    Section("bpe", 8192, 0),
)
_S = {s.name: s for s in SECTIONS}
EMBODIMENT_BASE, EMBODIMENT_CAPACITY = _S["embodiment"].start, _S["embodiment"].size
SLOT_BASE = _S["slot"].start
BIN_BASE, NUM_BINS = _S["bin"].start, _S["bin"].size
BINARY_BASE = _S["binary"].start
CATEGORY_BASE, CATEGORY_CAPACITY = _S["category"].start, _S["category"].size
AGENT_BASE = _S["agent"].start
assert _S["agent"].size == MAX_AGENTS
BPE_BASE = _S["bpe"].start


@dataclass(frozen=True)
class BpeBlock:
    owner: str  # the tokenizer (data card) name
    start: int
    size: int

    @property
    def stop(self) -> int:
        return self.start + self.size


@dataclass
class Vocabulary:
    """The fixed layout plus what a registry has allocated: embodiment tokens and BPE blocks."""

    embodiments: dict[str, int] = field(default_factory=dict)  # embodiment name -> token id
    bpe_blocks: list[BpeBlock] = field(default_factory=list)
    version: int = VOCAB_VERSION

    @property
    def size(self) -> int:
        """Rows an embedding table needs: everything up to the last allocated BPE id."""
        return max([BPE_BASE] + [b.stop for b in self.bpe_blocks])

    def check(self) -> None:
        ids = list(self.embodiments.values())
        if len(set(ids)) != len(ids):
            raise RegistryError("vocabulary: two embodiments share one token id; the registry was edited by hand")
        for name, i in self.embodiments.items():
            if not EMBODIMENT_BASE <= i < EMBODIMENT_BASE + EMBODIMENT_CAPACITY:
                raise RegistryError(f"vocabulary: embodiment '{name}' has id {i}, outside the embodiment section")
        blocks = sorted(self.bpe_blocks, key=lambda b: b.start)
        for a, b in zip(blocks, blocks[1:]):
            if b.start < a.stop:
                raise RegistryError(f"vocabulary: BPE blocks of '{a.owner}' and '{b.owner}' overlap")
        if blocks and blocks[0].start < BPE_BASE:
            raise RegistryError(f"vocabulary: BPE block of '{blocks[0].owner}' starts below {BPE_BASE}")

    def next_embodiment_id(self) -> int:
        used = set(self.embodiments.values())
        free = next((i for i in range(EMBODIMENT_BASE, EMBODIMENT_BASE + EMBODIMENT_CAPACITY) if i not in used), None)
        if free is None:
            raise RegistryError(f"vocabulary: all {EMBODIMENT_CAPACITY} embodiment tokens are in use")
        return free

    def next_bpe_start(self) -> int:
        return self.size

    def table(self) -> list[tuple[str, int, int, str]]:
        """Rows (section, first id, last id, what) for people: `uact tokenizer vocab`."""
        rows = [(s.name, s.start, s.stop - 1, "") for s in SECTIONS if s.size]
        rows[0] = ("special", 0, 15, " ".join(SPECIAL_NAMES))
        for name, i in sorted(self.embodiments.items(), key=lambda kv: kv[1]):
            rows.append(("embodiment", i, i, name))
        for b in sorted(self.bpe_blocks, key=lambda b: b.start):
            rows.append(("bpe", b.start, b.stop - 1, b.owner))
        return rows
