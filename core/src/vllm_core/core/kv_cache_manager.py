"""``KVCacheManager``: which blocks each request holds, prefix-cache lookups, caching on completion."""

from __future__ import annotations

from vllm_core.core.block_pool import BlockHash, BlockPool, KVCacheBlock, hash_block_tokens
from vllm_core.request import Request


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


class KVCacheManager:
    """Allocates KV blocks to requests on top of a ``BlockPool``.

    Invariants: a request's blocks cover ``num_computed_tokens`` plus the tokens scheduled this
    step; block ``i`` holds positions ``[i * block_size, (i + 1) * block_size)``.
    """

    def __init__(self, num_blocks: int, block_size: int, enable_caching: bool) -> None:
        self.block_size = block_size
        self.enable_caching = enable_caching
        self.pool = BlockPool(num_blocks, enable_caching)
        self.req_blocks: dict[str, list[KVCacheBlock]] = {}
        self.req_block_ids: dict[str, list[int]] = {}
        """The same blocks as ids, kept in step so a step does not rebuild them per request."""
        self.num_cached_blocks: dict[str, int] = {}
        self.prefix_queries = 0
        """Prompt tokens looked up in the prefix cache (for the hit rate)."""
        self.prefix_hits = 0
        """Prompt tokens found in the prefix cache."""

    @property
    def usage(self) -> float:
        return self.pool.usage

    def _update_block_hashes(self, request: Request) -> list[BlockHash]:
        hashes: list[BlockHash] = request.block_hashes  # type: ignore[assignment]
        tokens = request.all_token_ids
        bs = self.block_size
        while len(hashes) < len(tokens) // bs:
            i = len(hashes)
            parent = hashes[-1] if hashes else None
            extra = request.extensions.block_hash_extra_keys(i)
            hashes.append(hash_block_tokens(parent, tokens[i * bs : (i + 1) * bs], extra))
        return hashes

    def get_computed_blocks(self, request: Request) -> tuple[list[KVCacheBlock], int]:
        """Longest run of cached full blocks at the start of the request's tokens.

        Only full blocks count, and never the block holding the last token: at least one token
        is always computed so the step produces logits. A request asking for prompt logprobs
        gets no hits: every prompt position must go through the model.
        """
        if not self.enable_caching or request.sampling_params.prompt_logprobs is not None:
            return [], 0
        hashes = self._update_block_hashes(request)
        max_blocks = (request.num_tokens - 1) // self.block_size
        bs = self.block_size
        hits: list[KVCacheBlock] = []
        for i, block_hash in enumerate(hashes[:max_blocks]):
            block = self.pool.get_cached_block(block_hash, request.all_token_ids[i * bs : (i + 1) * bs])
            if block is None:
                break
            hits.append(block)
        return hits, len(hits) * bs

    def record_prefix_lookup(self, num_tokens: int, num_hit_tokens: int) -> None:
        """Count one admitted request's lookup in the hit-rate counters (once per request,
        not per retry or recompute)."""
        self.prefix_queries += num_tokens
        self.prefix_hits += num_hit_tokens

    def allocate_slots(
        self,
        request: Request,
        num_new_tokens: int,
        computed_blocks: list[KVCacheBlock] | None = None,
        num_lookahead_tokens: int = 0,
    ) -> list[KVCacheBlock] | None:
        """Give the request enough blocks for ``num_new_tokens`` more tokens, plus
        ``num_lookahead_tokens`` slots after them (draft tokens of speculative decoding: their
        KV is written, and overwritten later when a draft is rejected).

        ``computed_blocks`` are prefix-cache hits (first scheduling only). Returns the newly
        allocated blocks, or None (and changes nothing) when too few blocks are free.
        """
        computed_blocks = computed_blocks or []
        blocks = self.req_blocks.setdefault(request.request_id, [])
        num_computed = request.num_computed_tokens + len(computed_blocks) * self.block_size
        total = num_computed + num_new_tokens + num_lookahead_tokens
        needed = cdiv(total, self.block_size) - len(blocks) - len(computed_blocks)
        # Hits that sit in the free queue leave it when touched: they are not free for new blocks.
        reclaimed = sum(1 for b in computed_blocks if b.ref_cnt == 0)
        if needed > self.pool.num_free_blocks - reclaimed:
            if not blocks:
                del self.req_blocks[request.request_id]
                self.req_block_ids.pop(request.request_id, None)
            return None
        self.pool.touch(computed_blocks)
        blocks.extend(computed_blocks)
        ids = self.req_block_ids.setdefault(request.request_id, [])
        ids.extend(b.block_id for b in computed_blocks)
        self.num_cached_blocks.setdefault(request.request_id, len(blocks))
        new_blocks = self.pool.get_new_blocks(max(needed, 0))
        blocks.extend(new_blocks)
        ids.extend(b.block_id for b in new_blocks)
        return new_blocks

    def cache_blocks(self, request: Request, num_computed_tokens: int | None = None) -> None:
        """Register the request's full blocks up to ``num_computed_tokens`` (default: its
        ``num_computed_tokens``) in the prefix cache.

        The scheduler calls this with the tokens the current step *will* have computed: a
        later request in the same step may then hit these blocks, which is safe because every
        backend writes the whole batch's KV into the cache before any attention reads it.
        """
        if not self.enable_caching:
            return
        blocks = self.req_blocks.get(request.request_id)
        if not blocks:
            return
        start = self.num_cached_blocks.get(request.request_id, 0)
        if num_computed_tokens is None:
            num_computed_tokens = request.num_computed_tokens
        num_full = min(num_computed_tokens // self.block_size, len(blocks))
        if num_full <= start:
            return
        hashes = self._update_block_hashes(request)
        bs = self.block_size
        for i in range(start, num_full):
            self.pool.cache_block(blocks[i], hashes[i], request.all_token_ids[i * bs : (i + 1) * bs])
        self.num_cached_blocks[request.request_id] = num_full

    def free(self, request: Request) -> None:
        """Release the request's blocks, last block first so tails are evicted before prefixes."""
        blocks = self.req_blocks.pop(request.request_id, [])
        self.req_block_ids.pop(request.request_id, None)
        self.num_cached_blocks.pop(request.request_id, None)
        self.pool.free_blocks(reversed(blocks))

    def get_block_ids(self, request_id: str) -> list[int]:
        """The request's block ids in position order (a copy of a list kept in step with the
        blocks: a C-level list copy, not a walk over block objects)."""
        return list(self.req_block_ids.get(request_id, ()))

    def reset_prefix_cache(self) -> bool:
        return self.pool.reset_prefix_cache()
