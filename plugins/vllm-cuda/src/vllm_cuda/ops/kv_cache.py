"""``reshape_and_cache``: scatter the step's new keys and values into the paged KV cache.

One program per (token, KV head) copies a ``head_size`` row; a token whose slot is -1 (padding
of a CUDA-graph batch) is skipped. The copy is bit-exact: no arithmetic touches the values.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from vllm_cuda.launch import LaunchConfigs
from vllm_cuda.launch_nvidia import DEFAULT_LAUNCH_CONFIGS


@triton.jit
def _reshape_and_cache_kernel(
    key_ptr,
    value_ptr,
    key_cache_ptr,
    value_cache_ptr,
    slot_mapping_ptr,
    stride_kt,
    stride_kh,
    stride_vt,
    stride_vh,
    stride_cache_slot,  # one token of the flattened [num_blocks * block_size] slot axis
    stride_cache_h,
    head_size,
    BLOCK_D: tl.constexpr,
):
    token = tl.program_id(0)
    head = tl.program_id(1)
    slot = tl.load(slot_mapping_ptr + token).to(tl.int64)
    if slot < 0:
        return
    offs_d = tl.arange(0, BLOCK_D)
    mask = offs_d < head_size
    src_k = key_ptr + token.to(tl.int64) * stride_kt + head * stride_kh + offs_d
    src_v = value_ptr + token.to(tl.int64) * stride_vt + head * stride_vh + offs_d
    dst = slot * stride_cache_slot + head * stride_cache_h + offs_d
    tl.store(key_cache_ptr + dst, tl.load(src_k, mask=mask), mask=mask)
    tl.store(value_cache_ptr + dst, tl.load(src_v, mask=mask), mask=mask)


def reshape_and_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    configs: LaunchConfigs = DEFAULT_LAUNCH_CONFIGS,
) -> None:
    """Write new KV into the paged cache (same contract as ``Ops.reshape_and_cache``).

    key/value: [T, Hk, D] (last dim contiguous; may be views of a fused QKV output);
    key_cache/value_cache: [num_blocks, block_size, Hk, D]; slot_mapping: [T] int64,
    slot = block_id * block_size + offset; -1 skips the row.
    """
    num_tokens, num_kv_heads, head_size = key.shape
    if num_tokens == 0:
        return
    if key.stride(-1) != 1 or value.stride(-1) != 1:
        key, value = key.contiguous(), value.contiguous()
    if key_cache.stride() != value_cache.stride():
        raise ValueError(f"key and value caches differ in layout: {key_cache.stride()} vs {value_cache.stride()}")
    # Flattening (num_blocks, block_size) into slots needs block = block_size * token stride.
    if key_cache.stride(0) != key_cache.shape[1] * key_cache.stride(1) or key_cache.stride(3) != 1:
        raise ValueError(f"KV cache of strides {key_cache.stride()} is not a dense slot array")
    _reshape_and_cache_kernel[(num_tokens, num_kv_heads)](
        key,
        value,
        key_cache,
        value_cache,
        slot_mapping,
        key.stride(0),
        key.stride(1),
        value.stride(0),
        value.stride(1),
        key_cache.stride(1),
        key_cache.stride(2),
        head_size,
        BLOCK_D=triton.next_power_of_2(head_size),
        **configs.kv_cache.options,
    )
