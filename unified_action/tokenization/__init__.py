"""Per-embodiment action tokenizers over one shared token vocabulary, and the registry that holds them."""

from unified_action.tokenization.registry import Registry, default_registry_path
from unified_action.tokenization.tokenizer import ActionBatch, ActionTokenizer, TokenBatch, TokenizerSpec
from unified_action.tokenization.vocabulary import VOCAB_VERSION, Vocabulary

__all__ = ["VOCAB_VERSION", "ActionBatch", "ActionTokenizer", "Registry", "TokenBatch", "TokenizerSpec",
           "Vocabulary", "default_registry_path"]
