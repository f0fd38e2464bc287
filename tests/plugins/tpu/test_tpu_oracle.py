"""Greedy token ids through the tpu platform on XLA:CPU equal transformers' greedy ``generate``
for tiny random Llama and Qwen3 checkpoints: one request, 16 mixed requests, chunked prefill,
prefix caching and preemption, on one engine per architecture (its warm-up compiles every step
shape once). ``VLLM_XLA_CHECK_RECOMPILATION=1`` (conftest) makes any compilation after warm-up
an error, so every test here also proves that its workload stayed in the buckets; the last ones
check that directly and that an unbucketed shape trips the guard."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch

from tests.conftest import hf_greedy, import_or_require, random_prompts
from vllm_core import LLM, SamplingParams
from vllm_core.errors import EngineError

import_or_require("torch_xla", "tpu")
import_or_require("vllm_tpu", "tpu")

ENGINE_ARGS: dict[str, Any] = dict(
    device="tpu", dtype="float32", skip_tokenizer_init=True, max_model_len=128, block_size=16,
    max_num_batched_tokens=32, max_num_seqs=8, num_gpu_blocks_override=16, enable_prefix_caching=True,
    use_tqdm_on_load=False,
)
"""Token buckets 16 and 32, request bucket 8, block table 8 wide: 4 graphs. 16 blocks of 16
tokens cannot hold 8 running requests of up to 60 tokens: the mixed workload preempts."""


_odd_sizes = itertools.count(37)


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def engine(request: pytest.FixtureRequest, tiny_models: dict[str, tuple[str, Any]]) -> tuple[LLM, Any]:
    path, hf = tiny_models[request.param]
    return LLM(path, **ENGINE_ARGS), hf


def generate(llm: LLM, prompts: list[list[int]], max_tokens: list[int]) -> list[list[int]]:
    params = [SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True, detokenize=False) for n in max_tokens]
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


def assert_matches_hf(llm: LLM, hf: Any, prompts: list[list[int]], max_tokens: list[int]) -> None:
    got = generate(llm, prompts, max_tokens)
    for i, (p, n, g) in enumerate(zip(prompts, max_tokens, got)):
        expected = hf_greedy(hf, p, n)
        assert g == expected, f"prompt {i} (len {len(p)}): tpu {g} != transformers {expected}"


def test_warm_up_compiled_every_shape(engine: tuple[LLM, Any]) -> None:
    platform = engine[0].llm_engine.platform
    # (16, 8) and (32, 8) sampling steps, and a step of each token bucket that samples nothing
    assert platform.warmup_compiles == 4
    assert platform.guard.enabled and platform.guard.armed_at is not None


def test_one_request(engine: tuple[LLM, Any]) -> None:
    llm, hf = engine
    assert_matches_hf(llm, hf, [[5, 17, 300, 42, 7, 99, 256, 3, 11]], [12])


def test_mixed_requests_with_preemption(engine: tuple[LLM, Any]) -> None:
    """16 requests of 1 to 60 prompt tokens and 2 to 12 new ones: prefills, chunks and decodes
    share steps; the small KV cache preempts (recompute) some of them."""
    llm, hf = engine
    prompts = random_prompts(16, 1, 60, 512, seed=3)
    max_tokens = [2 + (7 * i) % 11 for i in range(16)]
    before = llm.llm_engine.core.scheduler.num_preemptions
    assert_matches_hf(llm, hf, prompts, max_tokens)
    assert llm.llm_engine.core.scheduler.num_preemptions > before, "the KV cache was meant to be too small"


def test_chunked_prefill(engine: tuple[LLM, Any]) -> None:
    """A 100-token prompt over a 32-token budget: three chunks sample nothing, the fourth does."""
    llm, hf = engine
    assert_matches_hf(llm, hf, random_prompts(1, 100, 100, 512, seed=4), [6])


def test_prefix_caching(engine: tuple[LLM, Any]) -> None:
    """Prompts sharing 48 tokens (three blocks): the second pass finds the shared blocks cached."""
    llm, hf = engine
    prefix = random_prompts(1, 48, 48, 512, seed=5)[0]
    prompts = random_prompts(4, 3, 12, 512, seed=6, prefix=prefix)
    assert_matches_hf(llm, hf, prompts, [5] * 4)
    params = SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True, detokenize=False)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    assert all(o.num_cached_tokens >= 48 for o in outs), [o.num_cached_tokens for o in outs]
    assert [list(o.outputs[0].token_ids) for o in outs] == [hf_greedy(engine[1], p, 5) for p in prompts]


def test_sampling_stays_in_the_graph(engine: tuple[LLM, Any]) -> None:
    """Temperature, top-k, top-p and seeds use the same precompiled graphs as greedy rows; a
    seeded request gives the same tokens alone and in a batch."""
    llm = engine[0]
    seeded = SamplingParams(temperature=0.8, top_k=20, top_p=0.9, seed=7, max_tokens=6, ignore_eos=True,
                            detokenize=False)
    other = SamplingParams(temperature=1.0, top_p=0.5, max_tokens=6, ignore_eos=True, detokenize=False)
    greedy = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True, detokenize=False)
    prompt = {"prompt_token_ids": [9, 8, 7, 6, 5]}
    alone = llm.generate([prompt], seeded, use_tqdm=False)[0].outputs[0].token_ids
    batch = llm.generate([{"prompt_token_ids": [1, 2, 3]}, prompt, prompt], [other, seeded, greedy], use_tqdm=False)
    assert batch[1].outputs[0].token_ids == alone
    assert batch[2].outputs[0].token_ids == hf_greedy(engine[1], prompt["prompt_token_ids"], 6)


def test_mixed_workload_compiles_nothing(engine: tuple[LLM, Any]) -> None:
    """Counted from torch-xla's metrics around a fresh mixed workload, and over the whole module."""
    from vllm_tpu.compilation import compile_count

    llm = engine[0]
    before = compile_count()
    generate(llm, random_prompts(12, 1, 90, 512, seed=8), [1 + i % 9 for i in range(12)])
    assert compile_count() == before
    assert llm.llm_engine.platform.guard.recompilations == 0


def test_unbucketed_shape_trips_the_guard(engine: tuple[LLM, Any]) -> None:
    """A step that computes something of a shape no bucket has: the guard raises after it."""
    platform = engine[0].llm_engine.platform
    size = next(_odd_sizes)  # a graph this process has not compiled (an earlier engine's is cached)
    with pytest.raises(EngineError, match=r"compiled 1 new XLA graph\(s\) after warm-up"):
        with platform.inference_context():
            odd = torch.arange(size, device=platform.device()) * 3  # noqa: F841 (live at the step's sync)


def test_feature_outside_the_static_pipeline_trips_the_guard(engine: tuple[LLM, Any]) -> None:
    """A presence penalty adds ops to the sampler's graph: the engine fails loudly, it does not
    compile silently (runs last: the engine is not used after the error)."""
    llm = engine[0]
    params = SamplingParams(temperature=0.0, presence_penalty=0.5, max_tokens=2, detokenize=False)
    with pytest.raises(EngineError, match="VLLM_XLA_CHECK_RECOMPILATION"):
        llm.generate([{"prompt_token_ids": [4, 5, 6]}], params, use_tqdm=False)
