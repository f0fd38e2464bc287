"""The engine settings every greedy-equality test runs under; all must give identical tokens."""

from __future__ import annotations

from typing import Any

# name -> (LLM keyword arguments, how many prompts, prompts share a long prefix)
SETTINGS: dict[str, dict[str, Any]] = {
    "alone": {"engine": {}, "batch": False},
    "batch16": {"engine": {}, "batch": True},
    "chunked": {"engine": {"max_num_batched_tokens": 16}, "batch": True},
    "prefix": {"engine": {"enable_prefix_caching": True, "block_size": 8}, "batch": True, "shared_prefix": True},
    "preempt": {"engine": {"num_gpu_blocks_override": 24, "block_size": 8}, "batch": True},
    # one step ahead (async scheduling) with chunked prefill, prefix hits and preemption at once
    "async": {"engine": {"async_scheduling": True, "max_num_batched_tokens": 24, "num_gpu_blocks_override": 24,
                         "block_size": 8, "enable_prefix_caching": True}, "batch": True, "shared_prefix": True},
}
