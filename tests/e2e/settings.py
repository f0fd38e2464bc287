"""The engine settings every greedy-equality test runs under; all must give identical tokens."""

from __future__ import annotations

from typing import Any

TARGET = "<the target model>"
"""Stands for the model under test where a setting names a model (a draft model)."""

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
    # n-gram speculative decoding (multi-token steps) with chunked prefill and prefix hits
    "ngram": {"engine": {"speculative_config": {"method": "ngram", "num_speculative_tokens": 3,
                                                "prompt_lookup_min": 1, "prompt_lookup_max": 3},
                         "max_num_batched_tokens": 32, "enable_prefix_caching": True, "block_size": 8},
              "batch": True, "shared_prefix": True},
    # the target as its own draft model (every draft right) with chunked prefill and preemption
    "draft": {"engine": {"speculative_config": {"method": "draft_model", "model": TARGET, "num_speculative_tokens": 3},
                         "max_num_batched_tokens": 32, "num_gpu_blocks_override": 24, "block_size": 8},
              "batch": True},
}


def engine_args(setting: str, model: str) -> dict[str, Any]:
    """The setting's LLM keyword arguments, ``TARGET`` replaced by the model's path."""
    engine = dict(SETTINGS[setting]["engine"])
    spec = engine.get("speculative_config")
    if spec is not None and spec.get("model") == TARGET:
        engine["speculative_config"] = {**spec, "model": model}
    return engine


def assert_speculation_ran(core: Any) -> None:
    """A speculative setting really verified drafts, and left every KV block free afterwards
    (rejected drafts hold nothing); cached blocks hold only tokens the requests kept."""
    spec = core.runner.extensions.get("speculative_decoding")
    assert spec is not None and spec.num_draft_tokens > 0, "no draft tokens were verified"
    if spec.config.method == "draft_model":  # the target drafting for itself is (almost) always right
        assert spec.num_accepted_tokens >= 0.9 * spec.num_draft_tokens, spec.stats()
    assert core.scheduler.async_scheduling is False
    pool = core.kv_cache_manager.pool
    assert pool.num_free_blocks == pool.num_blocks, "blocks still held after every request finished"
