"""A tiny random-weight Llama that carries the default model's real tokenizer and chat template,
so server tests exercise text, chat and tools at the speed of a toy model."""

from __future__ import annotations

import os

import torch


def save_tiny_chat_model(path: str, seed: int = 0, max_position_embeddings: int = 512) -> str:
    """Write config, random safetensors weights and SmolLM2's tokenizer to ``path``; returns it."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from vllm_core.model_executor.model_loader.default_model import default_model_path
    from vllm_core.model_executor.model_loader.gguf_loader import GGUFLoader

    tok = GGUFLoader().load_tokenizer(default_model_path(), None)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_position_embeddings,
        initializer_range=0.1, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    assert os.path.exists(os.path.join(path, "config.json"))
    return path
