"""Fixtures of the distributed tests: tiny checkpoints whose shapes stress the sharding."""

from __future__ import annotations

import os

import pytest
import torch

from tests.conftest import tiny_config

DEVICE = os.environ.get("VLLM_CORE_TEST_DEVICES", "reference").split(",")[0]
"""The platform the distributed tests run on (nox's core session: reference; cpu session: cpu)."""


def save_model(config, path: str, seed: int = 0):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    model.save_pretrained(path, safe_serialization=True, max_shard_size="100KB")
    return model


@pytest.fixture(scope="session")
def kv1_model(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Llama with one KV head (replicated on every tensor rank) and a vocabulary of 509, odd, so
    the vocabulary-parallel layers pad it. (checkpoint dir, transformers model)."""
    config = tiny_config("llama")
    config.num_key_value_heads = 1
    config.vocab_size = 509
    path = str(tmp_path_factory.mktemp("tiny-llama-kv1"))
    return path, save_model(config, path)


from tests.server.conftest import tiny_chat_model  # noqa: E402,F401 - the server test's model
