"""Tests for vllm_core.core.block_pool: ref counts, the LRU free queue, the prefix-cache index."""

from __future__ import annotations

import pytest

from vllm_core.core.block_pool import (
    BlockPool,
    FreeKVCacheBlockQueue,
    KVCacheBlock,
    hash_block_tokens,
)
from vllm_core.errors import ConfigError, KVCacheTooSmallError


def make_pool(num_blocks: int = 8, enable_caching: bool = True) -> BlockPool:
    return BlockPool(num_blocks, enable_caching)


def cache_chain(pool: BlockPool, blocks: list[KVCacheBlock], token_blocks: list[list[int]]) -> list[int]:
    """Register ``blocks`` as a hash chain over ``token_blocks``; returns the hashes."""
    hashes = []
    parent = None
    for block, tokens in zip(blocks, token_blocks):
        parent = hash_block_tokens(parent, tokens)
        pool.cache_block(block, parent, tokens)
        hashes.append(parent)
    return hashes


# ------------------------------------------------------------------------- free queue
def test_free_queue_initial_order_and_count() -> None:
    blocks = [KVCacheBlock(i) for i in range(5)]
    q = FreeKVCacheBlockQueue(blocks)
    assert q.num_free_blocks == 5
    assert q.block_ids() == [0, 1, 2, 3, 4]


def test_free_queue_remove_from_middle_keeps_order() -> None:
    blocks = [KVCacheBlock(i) for i in range(5)]
    q = FreeKVCacheBlockQueue(blocks)
    q.remove(blocks[2])
    assert q.block_ids() == [0, 1, 3, 4]
    assert q.num_free_blocks == 4
    assert blocks[2].prev_free is None and blocks[2].next_free is None
    # The neighbours are linked to each other directly.
    assert blocks[1].next_free is blocks[3]
    assert blocks[3].prev_free is blocks[1]


def test_free_queue_remove_head_and_tail() -> None:
    blocks = [KVCacheBlock(i) for i in range(4)]
    q = FreeKVCacheBlockQueue(blocks)
    q.remove(blocks[0])
    q.remove(blocks[3])
    assert q.block_ids() == [1, 2]
    assert q.popleft() is blocks[1]
    assert q.popleft() is blocks[2]
    assert q.num_free_blocks == 0
    assert q.block_ids() == []


def test_free_queue_append_goes_to_tail() -> None:
    blocks = [KVCacheBlock(i) for i in range(4)]
    q = FreeKVCacheBlockQueue(blocks[:2])
    q.append(blocks[3])
    q.append(blocks[2])
    assert q.block_ids() == [0, 1, 3, 2]
    q.remove(blocks[3])
    q.append(blocks[3])
    assert q.block_ids() == [0, 1, 2, 3]


def test_free_queue_popleft_empty_raises() -> None:
    q = FreeKVCacheBlockQueue([])
    with pytest.raises(IndexError):
        q.popleft()


def test_free_queue_remove_block_not_in_queue_raises() -> None:
    blocks = [KVCacheBlock(i) for i in range(3)]
    q = FreeKVCacheBlockQueue(blocks)
    q.remove(blocks[1])
    with pytest.raises(ValueError, match="not in the free queue"):
        q.remove(blocks[1])
    assert q.num_free_blocks == 2


def test_free_queue_remove_is_constant_time() -> None:
    """Removing from the middle touches only the neighbours: no scan of the list."""
    blocks = [KVCacheBlock(i) for i in range(10_000)]
    q = FreeKVCacheBlockQueue(blocks)
    middle = blocks[5_000]
    # Break the list far away from ``middle``: a scan from the head would hit the break.
    far = blocks[10]
    saved = far.next_free
    far.next_free = None
    q.remove(middle)
    far.next_free = saved
    assert blocks[4_999].next_free is blocks[5_001]
    assert q.num_free_blocks == 9_999


# ------------------------------------------------------------------------ alloc / free
def test_pool_needs_a_block() -> None:
    with pytest.raises(KVCacheTooSmallError, match="at least one block"):
        BlockPool(0, True)
    with pytest.raises(ConfigError):
        BlockPool(-3, False)


def test_alloc_sets_ref_count_and_takes_from_head() -> None:
    pool = make_pool(6)
    got = pool.get_new_blocks(3)
    assert [b.block_id for b in got] == [0, 1, 2]
    assert all(b.ref_cnt == 1 for b in got)
    assert pool.num_free_blocks == 3
    assert pool.free_queue.block_ids() == [3, 4, 5]
    assert pool.usage == pytest.approx(0.5)


def test_alloc_zero_blocks() -> None:
    pool = make_pool(2)
    assert pool.get_new_blocks(0) == []
    assert pool.num_free_blocks == 2


def test_alloc_too_many_raises_and_changes_nothing() -> None:
    pool = make_pool(4)
    pool.get_new_blocks(2)
    with pytest.raises(ValueError, match="asked for 3 KV blocks, only 2 free"):
        pool.get_new_blocks(3)
    assert pool.num_free_blocks == 2
    assert pool.free_queue.block_ids() == [2, 3]


def test_free_returns_block_when_ref_count_reaches_zero() -> None:
    pool = make_pool(4)
    (block,) = pool.get_new_blocks(1)
    pool.touch([block])  # a second request shares it
    assert block.ref_cnt == 2
    pool.free_blocks([block])
    assert block.ref_cnt == 1
    assert pool.num_free_blocks == 3
    assert block.block_id not in pool.free_queue.block_ids()
    pool.free_blocks([block])
    assert block.ref_cnt == 0
    assert pool.num_free_blocks == 4
    assert pool.free_queue.block_ids()[-1] == block.block_id


def test_over_free_raises() -> None:
    pool = make_pool(2)
    (block,) = pool.get_new_blocks(1)
    pool.free_blocks([block])
    with pytest.raises(RuntimeError, match="freed more often than taken"):
        pool.free_blocks([block])
    # The failed free did not put the block in the queue a second time.
    assert pool.num_free_blocks == 2
    assert pool.free_queue.block_ids().count(block.block_id) == 1


def test_free_order_is_eviction_order() -> None:
    """Blocks join the tail in the order freed; new blocks come from the head (LRU)."""
    pool = make_pool(4)
    blocks = pool.get_new_blocks(4)
    pool.free_blocks([blocks[2], blocks[0]])
    pool.free_blocks([blocks[3]])
    pool.free_blocks([blocks[1]])
    assert pool.free_queue.block_ids() == [2, 0, 3, 1]
    assert [b.block_id for b in pool.get_new_blocks(4)] == [2, 0, 3, 1]


def test_lru_eviction_evicts_the_earliest_freed_cached_block() -> None:
    pool = make_pool(3)
    blocks = pool.get_new_blocks(3)
    tokens = [[1, 2], [3, 4], [5, 6]]
    hashes = [hash_block_tokens(None, t) for t in tokens]
    for block, h, t in zip(blocks, hashes, tokens):
        pool.cache_block(block, h, t)
    pool.free_blocks([blocks[1]])  # freed first -> evicted first
    pool.free_blocks([blocks[0]])
    pool.free_blocks([blocks[2]])  # freed last -> evicted last

    (new,) = pool.get_new_blocks(1)
    assert new is blocks[1]
    assert new.block_hash is None and new.token_ids is None
    assert pool.get_cached_block(hashes[1], tokens[1]) is None
    assert pool.get_cached_block(hashes[0], tokens[0]) is blocks[0]
    assert pool.get_cached_block(hashes[2], tokens[2]) is blocks[2]

    (new,) = pool.get_new_blocks(1)
    assert new is blocks[0]
    assert pool.get_cached_block(hashes[2], tokens[2]) is blocks[2]


# -------------------------------------------------------------------------- hashing
def test_hash_chain_depends_on_parent() -> None:
    tokens = [7, 8, 9, 10]
    h_a = hash_block_tokens(None, [1, 2, 3, 4])
    h_b = hash_block_tokens(None, [1, 2, 3, 5])
    assert hash_block_tokens(h_a, tokens) != hash_block_tokens(h_b, tokens)
    assert hash_block_tokens(h_a, tokens) != hash_block_tokens(None, tokens)
    assert hash_block_tokens(h_a, tokens) == hash_block_tokens(h_a, list(tokens))
    assert hash_block_tokens(h_a, tokens) == hash_block_tokens(h_a, tuple(tokens))


def test_same_tokens_different_parent_is_a_miss() -> None:
    pool = make_pool(4)
    blocks = pool.get_new_blocks(2)
    cache_chain(pool, blocks, [[1, 2], [3, 4]])
    other_parent = hash_block_tokens(None, [9, 9])
    assert pool.get_cached_block(hash_block_tokens(other_parent, [3, 4]), [3, 4]) is None
    h0 = hash_block_tokens(None, [1, 2])
    assert pool.get_cached_block(hash_block_tokens(h0, [3, 4]), [3, 4]) is blocks[1]


def test_get_cached_block_confirms_token_ids() -> None:
    """A hash hit with different stored tokens (a collision) is not a hit."""
    pool = make_pool(2)
    (block,) = pool.get_new_blocks(1)
    h = hash_block_tokens(None, [1, 2, 3])
    pool.cache_block(block, h, [1, 2, 3])
    assert pool.get_cached_block(h, [1, 2, 3]) is block
    assert pool.get_cached_block(h, (1, 2, 3)) is block
    assert pool.get_cached_block(h, [1, 2, 4]) is None
    assert pool.get_cached_block(hash_block_tokens(None, [4, 5, 6]), [4, 5, 6]) is None


def test_cache_block_first_writer_wins() -> None:
    pool = make_pool(3)
    a, b = pool.get_new_blocks(2)
    h = hash_block_tokens(None, [1, 2])
    pool.cache_block(a, h, [1, 2])
    pool.cache_block(b, h, [1, 2])
    assert pool.get_cached_block(h, [1, 2]) is a
    assert b.block_hash is None
    # Re-caching a block that already has a hash keeps the first one.
    pool.cache_block(a, hash_block_tokens(None, [5, 6]), [5, 6])
    assert a.block_hash == h and a.token_ids == (1, 2)


def test_cache_block_disabled_caching_is_a_no_op() -> None:
    pool = make_pool(2, enable_caching=False)
    (block,) = pool.get_new_blocks(1)
    h = hash_block_tokens(None, [1])
    pool.cache_block(block, h, [1])
    assert block.block_hash is None
    assert pool.get_cached_block(h, [1]) is None


def test_evicting_a_stale_block_keeps_the_index_entry_of_the_owner() -> None:
    """A second block with the same hash never owns the index entry; reusing it must not
    drop the first block's entry."""
    pool = make_pool(3)
    a, b = pool.get_new_blocks(2)
    h = hash_block_tokens(None, [1, 2])
    pool.cache_block(a, h, [1, 2])
    b.block_hash, b.token_ids = h, (1, 2)  # as if it had been cached under h before a
    pool.free_blocks([b])
    pool.get_new_blocks(2)  # takes block 2, then evicts b
    assert pool.get_cached_block(h, [1, 2]) is a


# ---------------------------------------------------------------- hits on freed blocks
def test_cached_block_hit_after_free_is_taken_out_of_the_free_queue() -> None:
    pool = make_pool(4)
    blocks = pool.get_new_blocks(2)
    hashes = cache_chain(pool, blocks, [[1, 2], [3, 4]])
    pool.free_blocks(reversed(blocks))
    assert pool.num_free_blocks == 4
    assert pool.free_queue.block_ids() == [2, 3, 1, 0]

    hit = pool.get_cached_block(hashes[1], [3, 4])
    assert hit is blocks[1] and hit.ref_cnt == 0
    pool.touch([hit])
    assert hit.ref_cnt == 1
    assert pool.num_free_blocks == 3
    assert pool.free_queue.block_ids() == [2, 3, 0]
    # It keeps its hash: still a hit for the next request, and sharing raises the count.
    assert pool.get_cached_block(hashes[1], [3, 4]) is hit
    pool.touch([hit])
    assert hit.ref_cnt == 2
    assert pool.num_free_blocks == 3
    # New allocations skip it.
    assert [b.block_id for b in pool.get_new_blocks(3)] == [2, 3, 0]
    assert pool.get_cached_block(hashes[0], [1, 2]) is None  # block 0 was evicted
    assert pool.get_cached_block(hashes[1], [3, 4]) is hit


# --------------------------------------------------------------------------- reset
def test_reset_prefix_cache_refused_while_blocks_are_held() -> None:
    pool = make_pool(3)
    blocks = pool.get_new_blocks(1)
    h = cache_chain(pool, blocks, [[1, 2]])[0]
    assert pool.reset_prefix_cache() is False
    assert pool.get_cached_block(h, [1, 2]) is blocks[0]


def test_reset_prefix_cache_forgets_every_hash() -> None:
    pool = make_pool(3)
    blocks = pool.get_new_blocks(2)
    hashes = cache_chain(pool, blocks, [[1, 2], [3, 4]])
    pool.free_blocks(blocks)
    assert pool.reset_prefix_cache() is True
    assert pool.cached == {}
    assert all(b.block_hash is None and b.token_ids is None for b in pool.blocks)
    assert pool.get_cached_block(hashes[0], [1, 2]) is None
    assert pool.num_free_blocks == 3
