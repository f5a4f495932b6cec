"""`discrete`: only binary and categorical slots (buttons, game actions); every value is its state token."""

from __future__ import annotations

from collections.abc import Sequence

from unified_action.action_space import Slot, SlotKind
from unified_action.tokenization.kinds.base import register_kind
from unified_action.tokenization.kinds.flat import FlatLayout


@register_kind("discrete")
class DiscreteKind(FlatLayout):
    @classmethod
    def check_slots(cls, slots: Sequence[Slot]) -> str | None:
        cont = [s.name for s in slots if s.kind is SlotKind.CONTINUOUS]
        if cont:
            return f"'{cls.name}' takes only binary and categorical slots, but {cont[0]} is continuous"
        return None
