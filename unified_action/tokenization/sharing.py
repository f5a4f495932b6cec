"""Embodiments that share unified slots: whose tokenizer may encode another dataset's actions, and who a new
embodiment's embedding starts from.

Two uses, one notion of "shared slots":
- a dataset evaluated (or loaded) through ANOTHER embodiment's tokenizer (a mixture entry's `tokenizer:`, `uact eval
  --tokenizer`): allowed only when the tokenizer's card maps the dataset's native actions exactly as the dataset's
  own card does: the same native action dimension, and every native dimension onto the same slot(s) with the same
  transform. Then encoding the dataset's native actions through that tokenizer (its normalization, its embodiment
  token) is what the tokenizer does for its own data. `layout_problem` says, in one line, where they differ;
- a new embodiment registered for fine-tuning (`finetune.new_embodiment_init: shared_slots`): its embodiment row
  starts as the mean of the rows of the pretrained embodiments whose tokenizers share the most slots with it
  (`slot_donors`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from unified_action.cards.mapping import ActionMapping


def _dims(mapping: ActionMapping) -> list[tuple]:
    """Per native dimension: (the slot names it fills, its transform and the transform's parameters)."""
    out: list[tuple] = [((), ("unmapped",))] * mapping.native_dim
    for f in mapping.fields:
        names = tuple(mapping.slots[i].name for i in f.out)
        together = len(names) != f.native_size  # a table: every value feeds all its slots
        params = tuple(None if a is None else tuple(np.asarray(a, dtype=np.float64).ravel().tolist())
                       for a in (f.scale, f.offset, f.rows))
        for k in range(f.native_size):
            out[f.native_start + k] = (names if together else (names[k],), (f.transform, *params, f.onehot))
    return out


def _listed(names: Iterable[str]) -> str:
    names = sorted(names)
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def layout_problem(dataset: ActionMapping, tokenizer: ActionMapping) -> str | None:
    """None when `tokenizer`'s card maps native actions onto slots exactly as `dataset`'s card does, else what
    differs, in a few words naming the slots (for one line)."""
    ours, theirs = set(dataset.slot_names), set(tokenizer.slot_names)
    differ = []
    if ours - theirs:
        differ.append(f"only the dataset's card maps {_listed(ours - theirs)}")
    if theirs - ours:
        differ.append(f"only the tokenizer's card maps {_listed(theirs - ours)}")
    if dataset.native_dim != tokenizer.native_dim:
        return (f"native action dimension {dataset.native_dim}, the tokenizer's card has {tokenizer.native_dim}"
                + (f"; slots differ: {'; '.join(differ)}" if differ else ""))
    if differ:
        return f"slots differ: {'; '.join(differ)}"
    for d, (a, b) in enumerate(zip(_dims(dataset), _dims(tokenizer))):
        if a[0] != b[0]:
            return (f"native dimension {d} fills {', '.join(a[0]) or 'nothing'} in the dataset's card, "
                    f"{', '.join(b[0]) or 'nothing'} in the tokenizer's (same slots, another native order)")
        if a[1] != b[1]:
            return (f"slot {', '.join(a[0])} (native dimension {d}) is mapped with transform {a[1][0]} in the dataset's "
                    f"card, {b[1][0]} in the tokenizer's" + (" (other parameters)" if a[1][0] == b[1][0] else ""))
    return None


def slot_donors(slots: Iterable[str], candidates: Mapping[str, Iterable[str]]) -> tuple[list[str], int]:
    """The candidates (name -> its slots) that share the most slots with `slots` -> (their names, sorted; how many
    slots each shares). ([], 0) when none shares any."""
    mine = set(slots)
    shared = {name: len(mine & set(s)) for name, s in candidates.items()}
    best = max(shared.values(), default=0)
    if best == 0:
        return [], 0
    return sorted(n for n, k in shared.items() if k == best), best
