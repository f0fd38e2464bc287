"""``Attention``: the module a model calls; holds its layer's KV cache and the chosen backend."""

from __future__ import annotations

import torch
from torch import nn

from vllm_core.attention.backend import AttentionBackend
from vllm_core.attention.metadata import AttentionMetadata
from vllm_core.platforms.ops import Ops


class Attention(nn.Module):
    """Paged attention of one layer. The model runner binds ``kv_cache`` after allocating it."""

    def __init__(
        self,
        num_heads: int,
        head_size: int,
        num_kv_heads: int,
        scale: float,
        backend_cls: type[AttentionBackend],
        ops: Ops,
        layer_idx: int,
    ) -> None:
        super().__init__()
        self.impl = backend_cls(num_heads, head_size, num_kv_heads, scale, ops)
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_size = head_size
        self.layer_idx = layer_idx
        self.kv_cache: torch.Tensor = torch.empty(0)
        """[2, num_blocks, block_size, num_kv_heads, head_size] (backend-defined layout)."""

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, metadata: AttentionMetadata
    ) -> torch.Tensor:
        """q: [T, Hq * D], k/v: [T, Hk * D] -> [T, Hq * D]."""
        t = q.shape[0]
        out = self.impl.forward(
            q.view(t, self.num_heads, self.head_size),
            k.view(t, self.num_kv_heads, self.head_size),
            v.view(t, self.num_kv_heads, self.head_size),
            self.kv_cache,
            metadata,
        )
        return out.reshape(t, self.num_heads * self.head_size)
