"""The encoder budget (a step constraint) and the encoder cache's eviction, on plain objects."""

from __future__ import annotations

import torch

from vllm_core.plugins.api import ExtensionState, MultiModalFeature, MultiModalInputs, PlaceholderRange


def _state(*tokens: int) -> ExtensionState:
    feats = tuple(MultiModalFeature("image", f"h{i}", PlaceholderRange(10 * i, n)) for i, n in enumerate(tokens))
    return ExtensionState([MultiModalInputs(feats)])


def test_encoder_budget_admits_within_the_budget_and_always_one() -> None:
    from vllm_multimodal.budget import EncoderBudget

    budget = EncoderBudget(100)
    budget.begin_step([])
    assert budget.admit(_state(150))  # the first is admitted even past the budget
    assert not budget.admit(_state(10))
    assert budget.admit(ExtensionState())  # text-only requests are never held back
    budget.begin_step([])
    assert budget.admit(_state(60)) and budget.admit(_state(20, 20)) and not budget.admit(_state(1))


def test_encoder_cache_evicts_least_recently_used_but_not_kept() -> None:
    from vllm_multimodal.encoder_cache import EncoderCache

    cache = EncoderCache(10)
    cache.put("a", torch.zeros(4, 2), keep=set())
    cache.put("b", torch.zeros(4, 2), keep=set())
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", torch.zeros(4, 2), keep={"c"})
    assert "b" not in cache and "a" in cache and "c" in cache
    cache.put("d", torch.zeros(12, 2), keep={"a", "d"})  # over capacity, but what the step reads stays
    assert "a" in cache and "d" in cache and "c" not in cache
    assert cache.hits == 1


def test_block_keys_follow_the_placeholder_ranges() -> None:
    feats = (MultiModalFeature("image", "x", PlaceholderRange(20, 16)),)
    keyed = MultiModalInputs(feats, block_size=16)
    assert keyed.block_hash_extra_keys(0) == ()  # tokens 0..15: text before the image
    assert keyed.block_hash_extra_keys(1) == keyed.block_hash_extra_keys(2) == (("mm", "image", "x", 20),)
    assert keyed.block_hash_extra_keys(3) == ()  # after the image: the chain carries the key
    assert MultiModalInputs(feats).block_hash_extra_keys(0) == (("mm", "image", "x", 20),)  # size unknown
