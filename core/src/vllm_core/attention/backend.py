"""The ``AttentionBackend`` interface: paged attention over a ragged batch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from vllm_core.attention.metadata import AttentionMetadata
from vllm_core.platforms.ops import Ops


class AttentionBackend(ABC):
    """One attention layer's kernel. Instances hold per-layer constants only.

    KV cache layout (the default, a backend may change it through ``kv_cache_shape``)::

        kv_cache[0] = keys, kv_cache[1] = values: [num_blocks, block_size, num_kv_heads, head_size]
    """

    name: ClassVar[str]
    """Registry name."""
    priority: ClassVar[int] = 0
    """Higher wins among backends a platform can run."""
    requires: ClassVar[frozenset[str]] = frozenset()
    """Platform capabilities this backend needs (``frozenset({"cpu"})``, ``{"cuda", "triton"}``)."""

    @classmethod
    def supports(cls, head_size: int, dtype: torch.dtype) -> str | None:
        """None when the head size and dtype are supported, else why not."""
        return None

    @staticmethod
    def kv_cache_shape(
        num_blocks: int, block_size: int, num_kv_heads: int, head_size: int
    ) -> tuple[int, ...]:
        return (2, num_blocks, block_size, num_kv_heads, head_size)

    def __init__(
        self, num_heads: int, head_size: int, num_kv_heads: int, scale: float, ops: Ops
    ) -> None:
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}")
        self.num_heads = num_heads
        self.head_size = head_size
        self.num_kv_heads = num_kv_heads
        self.scale = scale
        self.ops = ops

    @abstractmethod
    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        """Write ``key``/``value`` into ``kv_cache`` at ``slot_mapping``, then attend.

        query: [T, num_heads, head_size]; key/value: [T, num_kv_heads, head_size].
        Returns [T, num_heads, head_size]. Each query token attends causally to every cached
        token of its request up to and including its own position.
        """
