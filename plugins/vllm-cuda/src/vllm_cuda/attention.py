"""``TritonAttentionBackend``: paged attention on GPUs through Triton kernels (NVIDIA and AMD).

Same KV layout as the reference backend (``kv_cache[0]`` keys, ``kv_cache[1]`` values, each
``[num_blocks, block_size, num_kv_heads, head_size]``). A forward stores the step's keys and
values with the Triton ``reshape_and_cache`` and runs one unified paged-attention launch over
the whole ragged batch, or, for a few long decodes, the split-KV path for the decode rows (see
``vllm_cuda.ops.paged_attention``). Launch configs come from the platform's ops
(``TritonOps.configs``); given other ops (tests), the generic NVIDIA entry.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from vllm_core.plugins.api import AttentionBackend, AttentionMetadata, Ops
from vllm_cuda.cuda_ops import TritonOps
from vllm_cuda.launch import LaunchConfigs
from vllm_cuda.launch_nvidia import DEFAULT_LAUNCH_CONFIGS
from vllm_cuda.ops.kv_cache import reshape_and_cache
from vllm_cuda.ops.paged_attention import paged_attention

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MIN_HEAD_SIZE, MAX_HEAD_SIZE = 16, 256
"""``tl.dot`` needs tiles of at least 16; past 256 the accumulator spills registers."""


class TritonAttentionBackend(AttentionBackend):
    """Unified Triton paged attention (prefill chunks and decodes in one launch, GQA grouped)."""

    name: ClassVar[str] = "triton"
    priority: ClassVar[int] = 20
    requires: ClassVar[frozenset[str]] = frozenset({"triton"})
    """A platform whose device runs these Triton kernels (cuda, rocm) offers ``triton``."""

    @classmethod
    def supports(cls, head_size: int, dtype: torch.dtype) -> str | None:
        if dtype not in SUPPORTED_DTYPES:
            return f"dtype {dtype} is not supported; choose one of {[str(d) for d in SUPPORTED_DTYPES]}"
        if head_size & (head_size - 1) or not MIN_HEAD_SIZE <= head_size <= MAX_HEAD_SIZE:
            return (f"head size {head_size} is not supported; it must be a power of two in "
                    f"[{MIN_HEAD_SIZE}, {MAX_HEAD_SIZE}] (64, 128 and 256 are the usual ones)")
        return None

    def __init__(
        self,
        num_heads: int,
        head_size: int,
        num_kv_heads: int,
        scale: float,
        ops: Ops,
        *,
        split_kv: bool | None = None,
        configs: LaunchConfigs | None = None,
    ) -> None:
        super().__init__(num_heads, head_size, num_kv_heads, scale, ops)
        self.split_kv = split_kv
        """None: the split-KV decode path is chosen per batch; True/False forces it (tests)."""
        if configs is None:
            configs = ops.configs if isinstance(ops, TritonOps) else DEFAULT_LAUNCH_CONFIGS
        self.configs = configs
        """The device's launch configs (tiles, warps, split-KV thresholds)."""

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        key_cache, value_cache = kv_cache[0], kv_cache[1]
        reshape_and_cache(key, value, key_cache, value_cache, metadata.slot_mapping, self.configs)
        return paged_attention(
            query, key_cache, value_cache, metadata, self.scale, split_kv=self.split_kv, configs=self.configs
        )
