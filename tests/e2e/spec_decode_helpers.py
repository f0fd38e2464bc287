"""What the speculative-decoding end-to-end tests read off a live engine."""

from __future__ import annotations

from typing import Any

from vllm_core import LLM, SamplingParams

SETTINGS: dict[str, dict[str, Any]] = {
    "chunked_prefix": {"max_num_batched_tokens": 16, "enable_prefix_caching": True},
    "preempt": {"num_gpu_blocks_override": 24},
    "async": {"async_scheduling": True, "enable_prefix_caching": True},
    "n2": {},
}
"""Engine settings every proposer's exactness test runs under (n2: two samples a prompt)."""


def spec_of(llm: LLM) -> Any:
    """The engine's speculative-decoding runner extension (its proposer and counters)."""
    return llm.llm_engine.core.runner.extensions.get("speculative_decoding")


def assert_all_blocks_free(llm: LLM) -> None:
    """Every KV block is back in the pool once every request has finished (rollback included)."""
    pool = llm.llm_engine.core.kv_cache_manager.pool
    assert pool.num_free_blocks == pool.num_blocks, "KV blocks still held after every request finished"


def assert_seeded_request_ignores_batch(llm: LLM, prompts: list[list[int]], max_tokens: int) -> None:
    """A seeded sampled request (the first prompt) gives the same tokens alone and beside random
    requests of the other prompts, with drafts verified by rejection sampling; the blocks come back."""
    prompt = {"prompt_token_ids": prompts[0]}
    seeded = SamplingParams(temperature=0.9, seed=1234, max_tokens=max_tokens, ignore_eos=True, detokenize=False)
    alone = llm.generate(prompt, seeded, use_tqdm=False)[0].outputs[0].token_ids
    others = SamplingParams(temperature=1.0, max_tokens=max_tokens, ignore_eos=True, detokenize=False)
    batch = llm.generate([prompt] + [{"prompt_token_ids": p} for p in prompts[1:]],
                         [seeded] + [others] * (len(prompts) - 1), use_tqdm=False)
    assert batch[0].outputs[0].token_ids == alone
    assert spec_of(llm).num_draft_tokens > 0
    assert_all_blocks_free(llm)
