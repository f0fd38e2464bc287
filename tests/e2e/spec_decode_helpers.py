"""What the speculative-decoding end-to-end tests read off a live engine."""

from __future__ import annotations

from typing import Any

from vllm_core import LLM

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
