"""Tests for vllm_core.core.kv_cache_manager: prefix hits, slot allocation, caching, freeing."""

from __future__ import annotations

import itertools

import pytest

from vllm_core.core.kv_cache_manager import KVCacheManager
from vllm_core.request import Request
from vllm_core.sampling_params import SamplingParams

BLOCK = 4
_ids = itertools.count()


def make_request(prompt: list[int], request_id: str | None = None, max_tokens: int = 16) -> Request:
    rid = request_id if request_id is not None else f"req-{next(_ids)}"
    return Request(rid, list(prompt), SamplingParams(max_tokens=max_tokens), eos_token_id=None, max_tokens=max_tokens)


def make_manager(num_blocks: int = 16, caching: bool = True) -> KVCacheManager:
    return KVCacheManager(num_blocks, BLOCK, caching)


def prefill(kv: KVCacheManager, req: Request) -> None:
    """Admit ``req`` as the scheduler does: prefix lookup, allocation, full prefill, caching."""
    hits, num_hit = kv.get_computed_blocks(req)
    assert kv.allocate_slots(req, req.num_tokens - num_hit, hits) is not None
    req.num_computed_tokens = req.num_tokens
    kv.cache_blocks(req)


# ----------------------------------------------------------------------- prefix hits
def test_no_hits_on_empty_cache() -> None:
    kv = make_manager()
    hits, n = kv.get_computed_blocks(make_request(list(range(10))))
    assert hits == [] and n == 0


def test_prefix_hits_count_only_full_blocks() -> None:
    kv = make_manager()
    first = make_request(list(range(11)))  # 2 full blocks + 3 tokens
    prefill(kv, first)
    second = make_request(list(range(11)) + [99, 98])
    hits, n = kv.get_computed_blocks(second)
    assert n == 8
    assert [b.block_id for b in hits] == kv.get_block_ids(first.request_id)[:2]


def test_prefix_hits_stop_at_first_differing_block() -> None:
    kv = make_manager()
    prefill(kv, make_request(list(range(13))))
    prompt = list(range(13))
    prompt[5] = 500  # second block differs
    hits, n = kv.get_computed_blocks(make_request(prompt))
    assert n == 4 and len(hits) == 1


def test_same_block_under_a_different_prefix_is_not_a_hit() -> None:
    kv = make_manager()
    prefill(kv, make_request([1, 2, 3, 4, 5, 6, 7, 8, 0]))
    hits, n = kv.get_computed_blocks(make_request([9, 9, 9, 9, 5, 6, 7, 8, 0]))
    assert n == 0 and hits == []


@pytest.mark.parametrize("num_blocks_in_prompt", [1, 2, 3])
def test_last_prompt_token_is_always_computed(num_blocks_in_prompt: int) -> None:
    """A prompt that is an exact multiple of block_size gets at most len-1 tokens (rounded
    down to blocks) as hits: the last block is recomputed so the step has logits."""
    kv = make_manager()
    prompt = list(range(BLOCK * num_blocks_in_prompt))
    prefill(kv, make_request(prompt))
    again = make_request(prompt)
    hits, n = kv.get_computed_blocks(again)
    assert n == (len(prompt) - 1) // BLOCK * BLOCK == BLOCK * (num_blocks_in_prompt - 1)
    assert n < len(prompt)
    assert kv.allocate_slots(again, len(prompt) - n, hits) is not None
    assert len(kv.get_block_ids(again.request_id)) == num_blocks_in_prompt


def test_prompt_one_token_longer_than_blocks_hits_all_full_blocks() -> None:
    kv = make_manager()
    prompt = list(range(2 * BLOCK))
    prefill(kv, make_request(prompt))
    hits, n = kv.get_computed_blocks(make_request(prompt + [123]))
    assert n == 2 * BLOCK and len(hits) == 2


def test_no_hits_with_caching_disabled() -> None:
    kv = make_manager(caching=False)
    prompt = list(range(9))
    prefill(kv, make_request(prompt))
    hits, n = kv.get_computed_blocks(make_request(prompt))
    assert hits == [] and n == 0
    assert kv.pool.cached == {}


# -------------------------------------------------------------------- allocate_slots
def test_allocate_slots_covers_the_tokens() -> None:
    kv = make_manager(8)
    req = make_request(list(range(10)))
    new = kv.allocate_slots(req, 10)
    assert new is not None and len(new) == 3
    assert kv.get_block_ids(req.request_id) == [b.block_id for b in new]
    # The next 2 tokens fit in the third block; the 3rd one needs a new block.
    req.num_computed_tokens = 10
    assert kv.allocate_slots(req, 2) == []
    req.num_computed_tokens = 12
    assert len(kv.allocate_slots(req, 1) or []) == 1
    assert len(kv.get_block_ids(req.request_id)) == 4
    assert kv.pool.num_free_blocks == 4


def test_allocate_slots_chunked_prefill_grows_blocks() -> None:
    kv = make_manager(8)
    req = make_request(list(range(13)))
    assert len(kv.allocate_slots(req, 5) or []) == 2
    req.num_computed_tokens = 5
    assert len(kv.allocate_slots(req, 5) or []) == 1
    req.num_computed_tokens = 10
    assert len(kv.allocate_slots(req, 3) or []) == 1
    assert len(kv.get_block_ids(req.request_id)) == 4


def test_allocate_slots_out_of_blocks_returns_none_and_changes_nothing() -> None:
    kv = make_manager(4)
    holder = make_request(list(range(8)))
    assert kv.allocate_slots(holder, 8) is not None
    free_before = kv.pool.num_free_blocks
    queue_before = kv.pool.free_queue.block_ids()

    req = make_request(list(range(100, 112)))  # needs 3 blocks, 2 free
    assert kv.allocate_slots(req, 12) is None
    assert kv.pool.num_free_blocks == free_before
    assert kv.pool.free_queue.block_ids() == queue_before
    assert kv.get_block_ids(req.request_id) == []
    assert req.request_id not in kv.req_blocks

    # A running request that cannot grow keeps what it had.
    holder.num_computed_tokens = 8
    assert kv.allocate_slots(holder, 9) is None
    assert len(kv.get_block_ids(holder.request_id)) == 2
    assert kv.pool.num_free_blocks == free_before


def test_allocate_slots_failure_with_free_queue_hits_changes_nothing() -> None:
    """Hits sitting in the free queue are not free for new blocks: touching them would take
    them out of the queue, so the check must count them, and a failure must not touch them."""
    kv = make_manager(4)
    first = make_request(list(range(9)))  # 3 blocks, 2 full and cached
    prefill(kv, first)
    kv.free(first)
    assert kv.pool.num_free_blocks == 4

    second = make_request(list(range(8)) + list(range(100, 109)))  # 17 tokens -> 5 blocks
    hits, n = kv.get_computed_blocks(second)
    assert n == 8 and all(b.ref_cnt == 0 for b in hits)
    queue_before = kv.pool.free_queue.block_ids()
    assert kv.allocate_slots(second, second.num_tokens - n, hits) is None
    assert kv.pool.num_free_blocks == 4
    assert kv.pool.free_queue.block_ids() == queue_before
    assert all(b.ref_cnt == 0 for b in hits)
    assert second.request_id not in kv.req_blocks
    # The hits are still cached.
    hits_again, n_again = kv.get_computed_blocks(second)
    assert n_again == 8 and hits_again == hits


def test_allocate_slots_free_queue_hits_exactly_fit() -> None:
    kv = make_manager(4)
    first = make_request(list(range(9)))
    prefill(kv, first)
    kv.free(first)
    second = make_request(list(range(8)) + list(range(100, 108)))  # 16 tokens -> 4 blocks
    hits, n = kv.get_computed_blocks(second)
    assert n == 8
    new = kv.allocate_slots(second, second.num_tokens - n, hits)
    assert new is not None and len(new) == 2
    assert kv.pool.num_free_blocks == 0
    assert kv.get_block_ids(second.request_id)[:2] == [b.block_id for b in hits]
    assert all(b.ref_cnt == 1 for b in hits)


def test_shared_hits_raise_ref_counts() -> None:
    kv = make_manager(8)
    first = make_request(list(range(9)))
    prefill(kv, first)
    second = make_request(list(range(9)))
    prefill(kv, second)
    shared = kv.req_blocks[first.request_id][:2]
    assert kv.req_blocks[second.request_id][:2] == shared
    assert all(b.ref_cnt == 2 for b in shared)
    kv.free(first)
    assert all(b.ref_cnt == 1 for b in shared)
    assert kv.pool.num_free_blocks == 8 - 2 - 1
    kv.free(second)
    assert kv.pool.num_free_blocks == 8


# ------------------------------------------------------------------------------ free
def test_free_releases_in_reverse_order() -> None:
    kv = make_manager(5)
    req = make_request(list(range(12)))
    kv.allocate_slots(req, 12)
    ids = kv.get_block_ids(req.request_id)
    kv.free(req)
    # Untouched block 3, 4 first, then the request's blocks last-first: the prefix is evicted last.
    assert kv.pool.free_queue.block_ids() == [3, 4] + ids[::-1]
    assert kv.get_block_ids(req.request_id) == []
    kv.free(req)  # freeing twice is harmless
    assert kv.pool.num_free_blocks == 5


def test_prefix_outlives_tail_under_eviction() -> None:
    kv = make_manager(3)
    first = make_request(list(range(9)))
    prefill(kv, first)
    kv.free(first)
    other = make_request([50, 51, 52, 53])
    assert kv.allocate_slots(other, 1) is not None  # evicts the partial last block only
    hits, n = kv.get_computed_blocks(make_request(list(range(9))))
    assert n == 8 and len(hits) == 2


# ------------------------------------------------------------------------ cache_blocks
def test_cache_blocks_registers_only_full_computed_blocks() -> None:
    kv = make_manager(8)
    req = make_request(list(range(10)))
    kv.allocate_slots(req, 6)
    req.num_computed_tokens = 6  # one full block computed, the second half done
    kv.cache_blocks(req)
    assert len(kv.pool.cached) == 1
    assert kv.num_cached_blocks[req.request_id] == 1
    blocks = kv.req_blocks[req.request_id]
    assert blocks[0].token_ids == (0, 1, 2, 3)
    assert blocks[1].block_hash is None

    kv.allocate_slots(req, 4)
    req.num_computed_tokens = 10
    kv.cache_blocks(req)
    assert len(kv.pool.cached) == 2
    assert blocks[1].token_ids == (4, 5, 6, 7)
    assert kv.req_blocks[req.request_id][2].block_hash is None  # 2 of 4 tokens


def test_cache_blocks_after_decode_fills_a_block() -> None:
    kv = make_manager(8)
    req = make_request(list(range(7)))
    prefill(kv, req)
    assert len(kv.pool.cached) == 1
    req.append_output_token(42)  # token 8 sampled, not yet computed
    kv.cache_blocks(req)
    assert len(kv.pool.cached) == 1
    kv.allocate_slots(req, 1)
    req.num_computed_tokens = 8
    kv.cache_blocks(req)
    assert len(kv.pool.cached) == 2
    assert kv.req_blocks[req.request_id][1].token_ids == (4, 5, 6, 42)
    # A new prompt that continues the generated text hits both blocks.
    hits, n = kv.get_computed_blocks(make_request(list(range(7)) + [42, 1]))
    assert n == 8


def test_cache_blocks_does_not_recache_prefix_hits() -> None:
    kv = make_manager(8)
    first = make_request(list(range(9)))
    prefill(kv, first)
    second = make_request(list(range(9)))
    hits, n = kv.get_computed_blocks(second)
    kv.allocate_slots(second, second.num_tokens - n, hits)
    assert kv.num_cached_blocks[second.request_id] == 2
    second.num_computed_tokens = 9
    kv.cache_blocks(second)
    assert len(kv.pool.cached) == 2


# -------------------------------------------------------------------------- counters
def test_hit_rate_counters_count_recorded_lookups_only() -> None:
    kv = make_manager(16)
    first = make_request(list(range(10)))
    prefill(kv, first)
    assert (kv.prefix_queries, kv.prefix_hits) == (0, 0)  # a lookup alone counts nothing
    kv.record_prefix_lookup(first.num_tokens, 0)
    second = make_request(list(range(10)) + [77, 78])
    hits, n = kv.get_computed_blocks(second)
    kv.get_computed_blocks(second)  # a retry (e.g. no free blocks) must not count twice
    kv.record_prefix_lookup(second.num_tokens, n)
    assert (kv.prefix_queries, kv.prefix_hits) == (22, 8)


def test_usage_and_reset_prefix_cache() -> None:
    kv = make_manager(4)
    req = make_request(list(range(9)))
    prefill(kv, req)
    assert kv.usage == pytest.approx(0.75)
    assert kv.reset_prefix_cache() is False
    kv.free(req)
    assert kv.usage == 0.0
    assert kv.reset_prefix_cache() is True
    hits, n = kv.get_computed_blocks(make_request(list(range(9))))
    assert n == 0


def test_cache_blocks_up_to_an_explicit_token_count() -> None:
    """The scheduler caches at scheduling time, with the tokens the step *will* have computed."""
    kv = make_manager(8)
    req = make_request(list(range(10)))
    kv.allocate_slots(req, 10)
    kv.cache_blocks(req, 10)  # num_computed_tokens is still 0
    assert len(kv.pool.cached) == 2
    assert kv.num_cached_blocks[req.request_id] == 2
    kv.cache_blocks(req, 5)  # going backwards changes nothing
    assert len(kv.pool.cached) == 2
    hits, n = kv.get_computed_blocks(make_request(list(range(10))))
    assert n == 8
