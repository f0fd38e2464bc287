"""``AttentionMetadata``: how one ragged batch maps onto the paged KV cache."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionMetadata:
    """Built once per step by the model runner, shared by every layer.

    Rows are requests in scheduler order; tokens of request ``i`` are
    ``query_start_loc[i]:query_start_loc[i + 1]`` of the flattened batch. Decode rows have one
    token; prefill rows a chunk whose first token sits at position ``seq_lens[i] - query_len``.
    """

    slot_mapping: torch.Tensor
    """[num_tokens] int64: cache slot (block_id * block_size + offset) of each new token; -1 skips."""
    block_tables: torch.Tensor
    """[num_reqs, max_blocks] int32: KV blocks of each request, padded with 0."""
    seq_lens: torch.Tensor
    """[num_reqs] int32: tokens in the cache after this step (context + new)."""
    query_start_loc: torch.Tensor
    """[num_reqs + 1] int32: prefix sums of new tokens per request."""
    seq_lens_cpu: list[int]
    """``seq_lens`` on the host, for backends that loop over requests."""
    query_start_loc_cpu: list[int]
    """``query_start_loc`` on the host."""
    max_query_len: int
    max_seq_len: int
    num_decodes: int
    """Leading rows with exactly one new token (the scheduler puts decodes first)."""
    block_size: int

    @property
    def num_reqs(self) -> int:
        return len(self.seq_lens_cpu)

    @property
    def num_tokens(self) -> int:
        return self.query_start_loc_cpu[-1]
