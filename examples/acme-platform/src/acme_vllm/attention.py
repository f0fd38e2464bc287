"""``AcmeAttention``: paged attention, one request at a time, through ``scaled_dot_product_attention``.

The contract is the ``AttentionBackend`` docstring's; the reference backend
(``ReferenceAttentionBackend``, what the conformance kit compares against) shows it in plain code:

- the KV cache is ``kv_cache[0]`` keys, ``kv_cache[1]`` values, each
  ``[num_blocks, block_size, num_kv_heads, head_size]``; new keys and values are written with
  ``ops.reshape_and_cache`` at ``metadata.slot_mapping`` (-1: padding, not written) *before*
  attending, so a chunk sees its own tokens;
- request ``i`` owns query tokens ``query_start_loc_cpu[i]:query_start_loc_cpu[i + 1]`` and its
  first ``seq_lens_cpu[i]`` cached tokens, in the blocks ``block_tables[i]``; its query tokens are
  the *last* ones of the sequence (a chunk may start after cached context);
- tokens past ``query_start_loc_cpu[-1]`` pad a fixed step shape and belong to no request: their
  output is zero;
- scores, softmax and the weighted sum run in float32; the result is cast to the query's dtype.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from vllm_core.plugins.api import AttentionBackend, AttentionMetadata


def gather_sequence(cache: torch.Tensor, block_table: torch.Tensor, seq_len: int) -> torch.Tensor:
    """The first ``seq_len`` tokens of one request: cache [num_blocks, block_size, Hk, D] and its
    block ids [max_blocks] -> [Hk, seq_len, D] float32 (SDPA's head-major layout)."""
    block_size = cache.shape[1]
    blocks = block_table[: -(-seq_len // block_size)].long()
    return cache[blocks].flatten(0, 1)[:seq_len].transpose(0, 1).float()


def causal_offset_mask(q_len: int, seq_len: int, device: torch.device) -> torch.Tensor:
    """[q_len, seq_len] bool, True where query token j (at position ``seq_len - q_len + j``) may
    attend to key position k: k <= its own position."""
    q_pos = torch.arange(seq_len - q_len, seq_len, device=device).unsqueeze(1)
    k_pos = torch.arange(seq_len, device=device).unsqueeze(0)
    return k_pos <= q_pos


class AcmeAttention(AttentionBackend):
    """Paged attention for the Acme platform (the reference's numerics, SDPA's kernel)."""

    name: ClassVar[str] = "acme"
    priority: ClassVar[int] = 5
    """Above the reference backend (0), which needs no capability and so is always a candidate."""
    requires: ClassVar[frozenset[str]] = frozenset({"acme"})

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        key_cache, value_cache = kv_cache[0], kv_cache[1]
        self.ops.reshape_and_cache(key, value, key_cache, value_cache, metadata.slot_mapping)
        out = torch.empty_like(query)  # [T, Hq, D]
        qsl = metadata.query_start_loc_cpu
        out[qsl[-1]:] = 0  # padding tokens of a fixed step shape
        for i, seq_len in enumerate(metadata.seq_lens_cpu):
            start, end = qsl[i], qsl[i + 1]
            if start == end:
                continue
            k = gather_sequence(key_cache, metadata.block_tables[i], seq_len)  # [Hk, S, D]
            v = gather_sequence(value_cache, metadata.block_tables[i], seq_len)
            q = query[start:end].transpose(0, 1).float()  # [Hq, q_len, D]
            mask = causal_offset_mask(end - start, seq_len, query.device)
            # enable_gqa: each group of num_heads // num_kv_heads query heads shares one KV head
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale, enable_gqa=True)
            out[start:end] = o.transpose(0, 1).to(query.dtype)
        return out
