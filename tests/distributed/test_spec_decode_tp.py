"""EAGLE and EAGLE-3 under tensor parallelism (TP=2, the ``mp`` backend): the head is built whole
on every rank, reads the target's (whole) hidden states and calls the target's sharded embedding
and LM head, so every rank drafts the same tokens. Greedy output equals transformers' with random
heads; a head built to copy a bigram target has its drafts accepted (it would not be, were the
hidden states or the collectives wrong); pipeline parallel is refused with the fix."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest

from tests.conftest import hf_greedy, random_prompts
from tests.distributed.conftest import DEVICE
from tests.e2e.test_spec_decode_eagle import bigram_target, copying_head
from vllm_core import LLM, SamplingParams
from vllm_core.errors import WorkerError
from vllm_core.spec_decode.random_heads import save_eagle_head

NEW_TOKENS = 16


def run_tp2(target: str, spec: dict[str, Any], prompts: list[list[int]], **engine: Any) -> tuple[list[list[int]], Any]:
    llm = LLM(target, dtype="float32", device=DEVICE, skip_tokenizer_init=True, use_tqdm_on_load=False,
              max_model_len=128, num_gpu_blocks_override=64, block_size=8, tensor_parallel_size=2,
              distributed_executor_backend="mp", speculative_config=spec, **engine)
    try:
        params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True, detokenize=False)
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
        tokens = [list(o.outputs[0].token_ids) for o in outs]
        metrics = llm.llm_engine.core.spec_decode_counters.snapshot()  # what /metrics serves
    finally:
        llm.llm_engine.core.executor.shutdown()
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("vllm-core-worker")]
    return tokens, metrics


@pytest.mark.parametrize("method", ["eagle", "eagle3"])
def test_random_heads_give_transformers_tokens(tiny_models, tmp_path_factory: pytest.TempPathFactory,  # type: ignore[no-untyped-def]
                                               method: str) -> None:
    target, hf = tiny_models["llama"]
    extra = {} if method == "eagle" else {"own_embedding": False, "draft_vocab_size": 128}
    head = save_eagle_head(str(tmp_path_factory.mktemp(f"tp-{method}")), hf.config, method, seed=5, **extra)
    prompts = random_prompts(4, 4, 24, 512, seed=21)
    spec = {"method": method, "model": head, "num_speculative_tokens": 3, "min_acceptance_rate": 0.0}
    tokens, metrics = run_tp2(target, spec, prompts, max_num_batched_tokens=16)
    assert tokens == [hf_greedy(hf, p, NEW_TOKENS) for p in prompts]
    assert metrics.num_drafts > 0, "no drafts were verified"


def test_a_copying_head_is_accepted_under_tp(tmp_path_factory: pytest.TempPathFactory) -> None:
    target = str(tmp_path_factory.mktemp("tp-bigram"))
    hf = bigram_target(target)
    head = copying_head(str(tmp_path_factory.mktemp("tp-copy-head")), hf.config)
    prompts = random_prompts(3, 4, 16, 512, seed=23)
    tokens, metrics = run_tp2(target, {"method": "eagle", "model": head, "num_speculative_tokens": 4}, prompts)
    assert tokens == [hf_greedy(hf, p, NEW_TOKENS) for p in prompts]
    assert metrics.num_draft_tokens > 0
    assert metrics.num_accepted_tokens / metrics.num_draft_tokens > 0.95, metrics


def test_pipeline_parallel_is_refused_with_the_fix(tiny_models, tmp_path_factory: pytest.TempPathFactory) -> None:  # type: ignore[no-untyped-def]
    target, hf = tiny_models["llama"]
    head = save_eagle_head(str(tmp_path_factory.mktemp("pp-eagle")), hf.config, "eagle", seed=6)
    with pytest.raises(WorkerError, match="use pipeline_parallel_size=1"):
        LLM(target, dtype="float32", device=DEVICE, skip_tokenizer_init=True, use_tqdm_on_load=False,
            max_model_len=64, pipeline_parallel_size=2, distributed_executor_backend="mp",
            speculative_config={"method": "eagle", "model": head, "num_speculative_tokens": 2})
