"""`bin`: every continuous value is one of 256 uniform bins over its normalized range (OpenVLA, RT-1)."""

from __future__ import annotations

from collections.abc import Sequence

from unified_action.action_space import Slot, SlotKind
from unified_action.tokenization.kinds.base import register_kind
from unified_action.tokenization.kinds.flat import FlatLayout


@register_kind("bin")
class BinKind(FlatLayout):
    @classmethod
    def check_slots(cls, slots: Sequence[Slot]) -> str | None:
        if slots and all(s.kind is not SlotKind.CONTINUOUS for s in slots):
            return f"'{cls.name}' needs a continuous slot, and this card has none"
        return None
