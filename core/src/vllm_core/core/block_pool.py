"""Paged KV-cache blocks: the pool, its LRU free queue and the prefix-cache index.

A block holds the KV of ``block_size`` consecutive tokens of one sequence. Blocks are
reference counted: a prefix-cache hit shares a block between requests. A block whose count
drops to zero goes to the *tail* of the free queue but keeps its hash, so a later request with
the same prefix can take it back (O(1) removal from the middle of the queue). New blocks are
taken from the *head*, which evicts the least recently freed cached block first::

    head -> [b7 (hash h3)] <-> [b2] <-> [b9 (hash h1)] <-> ... <- tail
            evicted first                                  freed last

A block's hash chains its parent's hash with its own token ids and the request's *extra keys*
(what else decides the block's KV: a ``cache_salt``, an adapter, images), so equal hashes mean
equal whole prefixes under equal conditions; a hit is also confirmed by comparing the stored
token ids. The hash is SHA-256 of a stable serialisation, not Python's ``hash()``: a collision
would hand one request another's KV (vLLM moved to SHA-256 after its hash-collision advisory),
and the value must not change between processes (``PYTHONHASHSEED``).
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable, Sequence
from typing import NewType

from vllm_core.errors import KVCacheTooSmallError
from vllm_core.extensions.state import BlockKey

BlockHash = NewType("BlockHash", bytes)
"""32 bytes: SHA-256 over (parent hash, token ids, extra keys)."""

_ROOT = b"vllm-core-kv-block-v1"


def _encode_key(key: BlockKey) -> bytes:
    """Stable, unambiguous bytes of one extra key (type tag, length, value)."""
    if isinstance(key, bool):
        raise TypeError(f"block hash extra keys may be str, int, bytes or tuples, got bool {key!r}")
    if isinstance(key, int):
        raw, tag = str(key).encode(), b"i"
    elif isinstance(key, str):
        raw, tag = key.encode("utf-8"), b"s"
    elif isinstance(key, bytes):
        raw, tag = key, b"b"
    elif isinstance(key, tuple):
        raw, tag = b"".join(_encode_key(k) for k in key), b"t"
    else:
        raise TypeError(f"block hash extra keys may be str, int, bytes or tuples, got {type(key).__name__}")
    return tag + len(raw).to_bytes(8, "little") + raw


def hash_block_tokens(
    parent_hash: BlockHash | None, token_ids: Sequence[int], extra_keys: tuple[BlockKey, ...] = ()
) -> BlockHash:
    """SHA-256 of one full block, chained to the hash of the block before it; ``extra_keys``
    (from the request's extensions) take part, so equal tokens under different keys differ."""
    h = hashlib.sha256(_ROOT if parent_hash is None else parent_hash)
    h.update(array("q", token_ids).tobytes())
    if extra_keys:
        h.update(_encode_key(extra_keys))
    return BlockHash(h.digest())


class KVCacheBlock:
    """Metadata of one KV block; the KV itself lives in the layers' cache tensors."""

    __slots__ = ("block_id", "ref_cnt", "block_hash", "token_ids", "prev_free", "next_free")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_cnt = 0
        self.block_hash: BlockHash | None = None
        self.token_ids: tuple[int, ...] | None = None
        self.prev_free: KVCacheBlock | None = None
        self.next_free: KVCacheBlock | None = None

    def __repr__(self) -> str:
        h = None if self.block_hash is None else self.block_hash.hex()[:12]
        return f"KVCacheBlock(id={self.block_id}, ref={self.ref_cnt}, hash={h})"


class FreeKVCacheBlockQueue:
    """Doubly linked list of free blocks threaded through the blocks themselves.

    A Python deque cannot remove from the middle in O(1); a cached block that is hit again
    must leave the queue wherever it is, so the links live on the blocks.
    """

    def __init__(self, blocks: Iterable[KVCacheBlock]) -> None:
        self._head = KVCacheBlock(-1)
        self._tail = KVCacheBlock(-1)
        self._head.next_free = self._tail
        self._tail.prev_free = self._head
        self.num_free_blocks = 0
        for block in blocks:
            self.append(block)

    def popleft(self) -> KVCacheBlock:
        block = self._head.next_free
        if block is None or block is self._tail:
            raise IndexError("no free KV blocks")
        self.remove(block)
        return block

    def remove(self, block: KVCacheBlock) -> None:
        prev, nxt = block.prev_free, block.next_free
        if prev is None or nxt is None:
            raise ValueError(f"{block} is not in the free queue")
        prev.next_free = nxt
        nxt.prev_free = prev
        block.prev_free = block.next_free = None
        self.num_free_blocks -= 1

    def append(self, block: KVCacheBlock) -> None:
        last = self._tail.prev_free
        assert last is not None
        last.next_free = block
        block.prev_free = last
        block.next_free = self._tail
        self._tail.prev_free = block
        self.num_free_blocks += 1

    def block_ids(self) -> list[int]:
        """Free block ids from head (next to be taken) to tail."""
        out = []
        node = self._head.next_free
        while node is not None and node is not self._tail:
            out.append(node.block_id)
            node = node.next_free
        return out


class BlockPool:
    """All KV blocks of the cache, the free queue and the hash -> block index."""

    def __init__(self, num_blocks: int, enable_caching: bool) -> None:
        if num_blocks < 1:
            raise KVCacheTooSmallError(f"the KV cache needs at least one block, got {num_blocks}")
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.blocks = [KVCacheBlock(i) for i in range(num_blocks)]
        self.free_queue = FreeKVCacheBlockQueue(self.blocks)
        self.cached: dict[BlockHash, KVCacheBlock] = {}

    @property
    def num_free_blocks(self) -> int:
        return self.free_queue.num_free_blocks

    @property
    def usage(self) -> float:
        """Fraction of blocks held by requests (cached free blocks count as free)."""
        return 1.0 - self.num_free_blocks / self.num_blocks

    def get_new_blocks(self, n: int) -> list[KVCacheBlock]:
        """Take ``n`` blocks from the head of the free queue, evicting their cached hashes."""
        if n > self.num_free_blocks:
            raise ValueError(f"asked for {n} KV blocks, only {self.num_free_blocks} free")
        out = []
        for _ in range(n):
            block = self.free_queue.popleft()
            self._evict(block)
            block.ref_cnt = 1
            out.append(block)
        return out

    def _evict(self, block: KVCacheBlock) -> None:
        if block.block_hash is not None:
            if self.cached.get(block.block_hash) is block:
                del self.cached[block.block_hash]
            block.block_hash = None
            block.token_ids = None

    def touch(self, blocks: Iterable[KVCacheBlock]) -> None:
        """Take a reference on prefix-cache hits, pulling free ones out of the free queue."""
        for block in blocks:
            if block.ref_cnt == 0:
                self.free_queue.remove(block)
            block.ref_cnt += 1

    def free_blocks(self, blocks: Iterable[KVCacheBlock]) -> None:
        """Drop one reference each; blocks reaching zero join the tail in the given order."""
        for block in blocks:
            block.ref_cnt -= 1
            if block.ref_cnt < 0:
                raise RuntimeError(f"{block} freed more often than taken")
            if block.ref_cnt == 0:
                self.free_queue.append(block)

    def get_cached_block(self, block_hash: BlockHash, token_ids: Sequence[int]) -> KVCacheBlock | None:
        """The cached block for this hash, if its stored token ids match."""
        block = self.cached.get(block_hash)
        if block is None or block.token_ids != tuple(token_ids):
            return None
        return block

    def cache_block(self, block: KVCacheBlock, block_hash: BlockHash, token_ids: Sequence[int]) -> None:
        """Register a full, computed block under its hash (first writer wins)."""
        if not self.enable_caching or block.block_hash is not None:
            return
        if block_hash in self.cached:
            return
        block.block_hash = block_hash
        block.token_ids = tuple(token_ids)
        self.cached[block_hash] = block

    def reset_prefix_cache(self) -> bool:
        """Forget every cached hash; only possible when no request holds a block."""
        if self.num_free_blocks != self.num_blocks:
            return False
        for block in self.blocks:
            self._evict(block)
        return True
