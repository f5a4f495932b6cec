"""Data cards: Markdown with a YAML header that maps an embodiment's native actions onto unified slots."""

from unified_action.cards.card import DataCard, load_card, parse_card
from unified_action.cards.mapping import ActionMapping

__all__ = ["ActionMapping", "DataCard", "load_card", "parse_card"]
