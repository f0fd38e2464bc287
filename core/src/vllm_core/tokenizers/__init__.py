"""Tokenizer glue: incremental detokenization and chat templates."""

from vllm_core.tokenizers.chat import apply_chat_template
from vllm_core.tokenizers.detokenizer import IncrementalDetokenizer

__all__ = ["IncrementalDetokenizer", "apply_chat_template"]
