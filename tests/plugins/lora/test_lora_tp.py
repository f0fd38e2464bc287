"""LoRA under tensor parallelism (TP=2, the ``mp`` backend: one process per rank, gloo): greedy
token ids equal PEFT's for base and adapter requests in one batch, with more adapters than
``max_loras`` (slots swapped on both ranks). Each rank holds its shard of every slot: A whole and
B split by output rows for qkv / gate_up (q, k and v each their own part), A split by input
columns and B whole for o_proj / down_proj (the delta joins the partial product before the
all-reduce); the embedding and lm_head LoRA are whole on each rank. Under pipeline parallelism
(PP=2) each stage holds its layers' part of every adapter. On the reference and cpu platforms."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest

from tests.conftest import random_prompts
from tests.plugins.lora.conftest import peft_greedy
from tests.plugins.lora.test_lora_oracle import DEVICES, requests_for
from vllm_core import LLM, SamplingParams

MAX_TOKENS = 6


def assert_parallel_matches_peft(model: tuple[str, Any, dict[str, str]], device: str, seed: int, **parallel: int) -> None:
    """Base + 4 adapters (ranks 4-32, attention / MLP / embedding / lm_head targets) in one
    batch with max_loras=2 (slots swapped) on the ``mp`` backend: PEFT's tokens, no worker left."""
    path, base, adapters = model
    loras = requests_for(adapters)
    prompts = random_prompts(len(loras), 5, 16, 512, seed=seed)
    llm = LLM(path, dtype="float32", device=device, max_model_len=64, skip_tokenizer_init=True,
              use_tqdm_on_load=False, distributed_executor_backend="mp", enable_lora=True, max_loras=2,
              max_lora_rank=32, max_cpu_loras=4, block_size=8, max_num_batched_tokens=32,
              kv_cache_memory_bytes=1 << 21, **parallel)
    try:
        params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True, detokenize=False)
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False, lora_request=loras)
        for p, lr, o in zip(prompts, loras, outs):
            want = peft_greedy(base, None if lr is None else lr.lora_path, p, MAX_TOKENS)
            assert list(o.outputs[0].token_ids) == want, f"{parallel} adapter {None if lr is None else lr.lora_name}"
    finally:
        llm.llm_engine.core.executor.shutdown()
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("vllm-core-worker")]


@pytest.mark.parametrize("device", DEVICES[:2])
def test_tensor_parallel_matches_peft(lora_models: dict[str, Any], device: str) -> None:
    assert_parallel_matches_peft(lora_models["llama"], device, 13, tensor_parallel_size=2)


@pytest.mark.parametrize("device", DEVICES[:2])
def test_pipeline_parallel_matches_peft(lora_models: dict[str, Any], device: str) -> None:
    """PP=2: each stage wraps and loads its own layers (the embedding LoRA on the first stage,
    ``lm_head`` on the last), every stage keeps the same slot map (qwen3: tied embeddings)."""
    assert_parallel_matches_peft(lora_models["qwen3"], device, 17, pipeline_parallel_size=2)
