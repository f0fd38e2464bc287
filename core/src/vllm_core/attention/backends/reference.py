"""Reference paged attention: one request at a time, plain PyTorch, float32 softmax.

Slow by design and easy to check: it gathers each request's keys and values from its blocks
and applies an explicit causal mask. Every other backend is compared against it.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from vllm_core.attention.backend import AttentionBackend
from vllm_core.attention.metadata import AttentionMetadata


def gather_kv(cache: torch.Tensor, block_ids: torch.Tensor, seq_len: int) -> torch.Tensor:
    """[num_blocks, block_size, H, D] -> the first ``seq_len`` tokens of these blocks: [seq_len, H, D]."""
    return cache.index_select(0, block_ids).flatten(0, 1)[:seq_len]


def reference_attention(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    metadata: AttentionMetadata,
    scale: float,
) -> torch.Tensor:
    """Paged causal attention for a ragged batch; the KV must already be in the cache."""
    num_heads = query.shape[1]
    num_kv_heads = key_cache.shape[2]
    group = num_heads // num_kv_heads
    block_size = key_cache.shape[1]
    out = torch.empty_like(query)
    qsl = metadata.query_start_loc_cpu
    if qsl[-1] < query.shape[0]:
        out[qsl[-1]:] = 0  # padding tokens of a static step shape: they belong to no request
    for i, seq_len in enumerate(metadata.seq_lens_cpu):
        start, end = qsl[i], qsl[i + 1]
        q_len = end - start
        n_blocks = -(-seq_len // block_size)
        blocks = metadata.block_tables[i, :n_blocks].long()
        k = gather_kv(key_cache, blocks, seq_len).float().repeat_interleave(group, dim=1)
        v = gather_kv(value_cache, blocks, seq_len).float().repeat_interleave(group, dim=1)
        q = query[start:end].float()
        scores = torch.einsum("qhd,khd->hqk", q, k) * scale
        q_pos = torch.arange(seq_len - q_len, seq_len).unsqueeze(1)
        k_pos = torch.arange(seq_len).unsqueeze(0)
        scores.masked_fill_(k_pos > q_pos, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out[start:end] = torch.einsum("hqk,khd->qhd", probs, v).to(query.dtype)
    return out


class ReferenceAttentionBackend(AttentionBackend):
    """Runs anywhere PyTorch runs; the conformance oracle."""

    name: ClassVar[str] = "reference"
    priority: ClassVar[int] = 0
    requires: ClassVar[frozenset[str]] = frozenset()

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        self.ops.reshape_and_cache(key, value, kv_cache[0], kv_cache[1], metadata.slot_mapping)
        return reference_attention(query, kv_cache[0], kv_cache[1], metadata, self.scale)
