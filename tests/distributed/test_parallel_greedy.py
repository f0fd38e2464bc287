"""Greedy token ids at TP=2, PP=2 and TP=2 x PP=2 (the ``mp`` backend: one process per rank,
gloo) equal transformers' greedy ``generate`` (the TP=1 engine is held to the same oracle in
tests/e2e), with chunked prefill, prefix caching, preemption and async scheduling in one run
(with PP: a step per stage in flight, no placeholder tokens)."""

from __future__ import annotations

import multiprocessing

import pytest

from tests.conftest import hf_greedy, random_prompts
from tests.distributed.conftest import DEVICE
from vllm_core import LLM, SamplingParams
from vllm_core.core.scheduler import PLACEHOLDER_TOKEN_ID
from vllm_core.errors import ModelLoadError

NEW_TOKENS = 24
ENGINE = dict(
    max_model_len=128, max_num_batched_tokens=24, num_gpu_blocks_override=24, block_size=8,
    enable_prefix_caching=True, async_scheduling=True,
)
"""Chunks of 24 tokens, 24 blocks of 8 for 8 sequences of up to 94 tokens (preemption), a
shared 40-token prefix (prefix hits), one step ahead where the backend allows it."""


NGRAM = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 1, "prompt_lookup_max": 3,
         "disable_by_batch_size": 4}
"""8 requests: steps over more than 4 draft nothing and run ahead (decided on the driver)."""


def run_and_compare(path: str, hf, tp: int, pp: int, vocab: int, **engine) -> LLM:  # type: ignore[no-untyped-def]
    prefix = random_prompts(1, 40, 40, vocab, seed=99)[0]
    prompts = random_prompts(8, 3, 30, vocab, seed=1, prefix=prefix)
    expected = [hf_greedy(hf, p, NEW_TOKENS) for p in prompts]
    llm = LLM(path, dtype="float32", device=DEVICE, skip_tokenizer_init=True, use_tqdm_on_load=False,
              tensor_parallel_size=tp, pipeline_parallel_size=pp, distributed_executor_backend="mp",
              **{**ENGINE, **engine})
    core = llm.llm_engine.core
    executor = core.executor
    launch, drafted, ahead, placeholders = executor.execute_model_async, [], [], []

    def counting_launch(out):  # type: ignore[no-untyped-def]
        drafted.extend(r.draft_token_ids for r in out.scheduled if r.draft_token_ids)
        placeholders.extend(r.req_id for r in out.scheduled if PLACEHOLDER_TOKEN_ID in r.token_ids)
        if not out.is_empty:
            ahead.append(len(core._in_flight))  # steps still running when this one starts
        return launch(out)

    executor.execute_model_async = counting_launch  # observes the steps, changes nothing
    try:
        params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True, detokenize=False)
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        for i, (o, e) in enumerate(zip(outs, expected)):
            assert o.outputs[0].token_ids == e, f"tp={tp} pp={pp}: prompt {i} differs"
        assert core.scheduler.num_preemptions > 0, "the KV cache was meant to be too small"
        assert sum(o.num_cached_tokens for o in outs) > 0, "no prefix-cache hit"
        if "speculative_config" in engine:  # async while more than 4 requests run, then drafting
            assert core.num_async_steps > 0, "no step ran ahead of its results"
        else:
            assert core.scheduler.async_scheduling
        if core.num_async_steps:
            assert max(ahead) == 1, "the next step starts while the previous one runs"
        if pp > 1:  # stage 0 runs step N+1 while stage 1 runs step N, on other requests
            assert not placeholders, "the first stage needs real token ids"
        if "speculative_config" in engine:
            assert drafted, "no step carried draft tokens to the workers"
    finally:
        llm.llm_engine.core.executor.shutdown()
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("vllm-core-worker")]
    return llm


@pytest.mark.parametrize(("arch", "tp", "pp"), [("llama", 2, 1), ("qwen3", 1, 2), ("qwen2", 2, 1)])
def test_greedy_matches_transformers(tiny_models, arch: str, tp: int, pp: int) -> None:  # type: ignore[no-untyped-def]
    """llama: GQA heads split; qwen3: q/k norms, tied embeddings across stages; qwen2: qkv bias,
    with n-gram speculative decoding (multi-token steps verified on every rank)."""
    path, hf = tiny_models[arch]
    run_and_compare(path, hf, tp, pp, 512, **({"speculative_config": NGRAM} if arch == "qwen2" else {}))


def test_kv_head_replication_odd_vocab_tp2_pp2(kv1_model) -> None:  # type: ignore[no-untyped-def]
    """Four ranks: one KV head replicated on both tensor ranks of each stage, a vocabulary of
    509 padded to 510 and split, two pipeline stages."""
    path, hf = kv1_model
    run_and_compare(path, hf, 2, 2, 509)


def test_pp2_default_gguf_model_matches_transformers(default_model_path: str, hf_default_model) -> None:  # type: ignore[no-untyped-def]
    """SmolLM2-135M from its GGUF file on two pipeline stages (each dequantizes only its own
    layers' tensors); its 9 heads do not split over 2 tensor ranks, so TP=2 is refused."""
    prompts = random_prompts(3, 5, 40, 49152, seed=5)
    expected = [hf_greedy(hf_default_model, p, 16) for p in prompts]
    # the transformers oracle's numerics: on the cpu platform, GGUF blocks dequantized (not kept packed)
    extra = {"quantization": "none"} if DEVICE == "cpu" else {}
    llm = LLM(default_model_path, dtype="float32", device=DEVICE, skip_tokenizer_init=True, use_tqdm_on_load=False,
              max_model_len=128, num_gpu_blocks_override=32, block_size=16, pipeline_parallel_size=2, **extra)
    try:
        params = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True, detokenize=False)
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        assert [o.outputs[0].token_ids for o in outs] == expected
    finally:
        llm.llm_engine.core.executor.shutdown()
    with pytest.raises(ModelLoadError, match="num_attention_heads \\(9\\) is not divisible by tensor_parallel_size=2"):
        LLM(default_model_path, tensor_parallel_size=2, use_tqdm_on_load=False)
