"""XLA-friendly paged attention: one graph for prefill, decode and mixed steps.

Every shape in it is a bucket's (tokens ``T``, requests ``R``, block-table width ``W``), and
nothing is read on the host: each token finds its request from ``query_start_loc`` by a
comparison, gathers its request's pages through the block table (``[T, W * block_size]`` keys
and values) and masks every slot after its own position (which also masks everything past the
request's length). Padded tokens (past ``query_start_loc[-1]``) attend to their clamped
request's first slots; their rows are thrown away. The KV write is the native
``reshape_and_cache`` (an ``index_copy`` with padded slots redirected to a duplicate write of
the same value, no host sync).

On a real TPU, torch-xla's Pallas ragged paged attention kernel would replace the gather; it is
not written here because it cannot be dispatched on XLA:CPU (see the README).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from vllm_core.plugins.api import AttentionBackend, AttentionMetadata


def xla_paged_attention(
    query: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor,
    metadata: AttentionMetadata, scale: float,
) -> torch.Tensor:
    """query: [T, Hq, D]; caches: [num_blocks, block_size, Hkv, D] (the KV already written).
    Returns [T, Hq, D]; softmax in float32."""
    num_tokens, num_heads, head_size = query.shape
    block_size, num_kv_heads = key_cache.shape[1], key_cache.shape[2]
    group = num_heads // num_kv_heads
    qsl = metadata.query_start_loc.long()  # [R + 1]
    seq_lens = metadata.seq_lens.long()  # [R]
    num_reqs = seq_lens.shape[0]
    tok = torch.arange(num_tokens, device=query.device)
    req = (tok.unsqueeze(1) >= qsl[1:].unsqueeze(0)).sum(dim=1).clamp(max=num_reqs - 1)  # [T]
    pos = seq_lens[req] - qsl[req + 1] + tok  # [T] each token's position
    tables = metadata.block_tables.long()[req]  # [T, W]
    ctx = tables.shape[1] * block_size
    k = key_cache[tables].reshape(num_tokens, ctx, num_kv_heads, head_size).float()
    v = value_cache[tables].reshape(num_tokens, ctx, num_kv_heads, head_size).float()
    q = query.float().view(num_tokens, num_kv_heads, group, head_size)
    scores = torch.einsum("thgd,tlhd->thgl", q, k) * scale
    visible = torch.arange(ctx, device=query.device).unsqueeze(0) <= pos.unsqueeze(1)  # [T, ctx]
    scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = torch.einsum("thgl,tlhd->thgd", probs, v)
    return out.reshape(num_tokens, num_heads, head_size).to(query.dtype)


class XLAPagedAttention(AttentionBackend):
    """Paged attention for the tpu platform (any torch-xla device)."""

    name: ClassVar[str] = "xla"
    priority: ClassVar[int] = 20
    requires: ClassVar[frozenset[str]] = frozenset({"xla"})

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        self.ops.reshape_and_cache(key, value, kv_cache[0], kv_cache[1], metadata.slot_mapping)
        return xla_paged_attention(query, kv_cache[0], kv_cache[1], metadata, self.scale)
