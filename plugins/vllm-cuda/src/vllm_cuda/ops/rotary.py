"""Neox-style rotary embedding of q and k in one launch, one program per token (and the same
fused with the per-head RMSNorm of q and k that Qwen3 runs first).

Each program loads the token's cos/sin row once and rotates all of its query heads and KV
heads as [heads, D/2] tiles (the two halves of every head). The rotation runs in float32 and
rounds to the input dtype, as ``Ops.rotary_embedding`` does; FMA contraction is off so the
products round exactly where PyTorch's do.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from vllm_cuda.launch import LaunchConfigs
from vllm_cuda.launch_nvidia import DEFAULT_LAUNCH_CONFIGS


@triton.jit
def _rotate_heads(src_ptr, dst_ptr, stride_src_h, stride_dst_h, num_heads, half, cos, sin, BLOCK_H: tl.constexpr,
                  BLOCK_HALF: tl.constexpr):
    """Rotate ``num_heads`` heads of one token: [BLOCK_H, BLOCK_HALF] tiles of each half."""
    offs_h = tl.arange(0, BLOCK_H)[:, None]
    offs_d = tl.arange(0, BLOCK_HALF)[None, :]
    mask = (offs_h < num_heads) & (offs_d < half)
    src = src_ptr + offs_h * stride_src_h + offs_d
    x1 = tl.load(src, mask=mask, other=0.0)
    x2 = tl.load(src + half, mask=mask, other=0.0)
    x1f = x1.to(tl.float32)
    x2f = x2.to(tl.float32)
    dst = dst_ptr + offs_h * stride_dst_h + offs_d
    tl.store(dst, (x1f * cos - x2f * sin).to(x1.dtype), mask=mask)
    tl.store(dst + half, (x2f * cos + x1f * sin).to(x1.dtype), mask=mask)


@triton.jit
def _rotary_kernel(
    positions_ptr,
    q_ptr,
    k_ptr,
    q_out_ptr,
    k_out_ptr,
    cos_sin_ptr,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_qot,
    stride_qoh,
    stride_kot,
    stride_koh,
    stride_cos_sin,
    num_q_heads,
    num_k_heads,
    half,
    BLOCK_HQ: tl.constexpr,
    BLOCK_HK: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    pos = tl.load(positions_ptr + token).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_HALF)
    row = cos_sin_ptr + pos * stride_cos_sin + offs_d
    cos = tl.load(row, mask=offs_d < half, other=0.0)[None, :]
    sin = tl.load(row + half, mask=offs_d < half, other=0.0)[None, :]
    _rotate_heads(q_ptr + token * stride_qt, q_out_ptr + token * stride_qot, stride_qh, stride_qoh, num_q_heads,
                  half, cos, sin, BLOCK_HQ, BLOCK_HALF)
    _rotate_heads(k_ptr + token * stride_kt, k_out_ptr + token * stride_kot, stride_kh, stride_koh, num_k_heads,
                  half, cos, sin, BLOCK_HK, BLOCK_HALF)


def rotary_embedding(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    configs: LaunchConfigs = DEFAULT_LAUNCH_CONFIGS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Neox-style rotary embedding (rotate halves); returns new (q, k), the inputs untouched.

    positions: [T] int64; q: [T, Hq, D]; k: [T, Hk, D] (each may be a strided view of a fused
    QKV output, last dim contiguous); cos_sin_cache: [max_pos, D] float32, cos | sin halves.
    """
    num_tokens, num_q_heads, head_size = q.shape
    num_k_heads = k.shape[1]
    if k.shape[0] != num_tokens or k.shape[2] != head_size or cos_sin_cache.shape[-1] != head_size:
        raise ValueError(f"rotary shapes disagree: q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"cos_sin_cache {tuple(cos_sin_cache.shape)}")
    if q.stride(-1) != 1:
        q = q.contiguous()
    if k.stride(-1) != 1:
        k = k.contiguous()
    cos_sin_cache = cos_sin_cache.contiguous()
    q_out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    k_out = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    if num_tokens:
        half = head_size // 2
        _rotary_kernel[(num_tokens,)](
            positions, q, k, q_out, k_out, cos_sin_cache,
            q.stride(0), q.stride(1), k.stride(0), k.stride(1),
            q_out.stride(0), q_out.stride(1), k_out.stride(0), k_out.stride(1),
            cos_sin_cache.stride(0), num_q_heads, num_k_heads, half,
            BLOCK_HQ=triton.next_power_of_2(num_q_heads), BLOCK_HK=triton.next_power_of_2(num_k_heads),
            BLOCK_HALF=triton.next_power_of_2(half), **configs.rotary.options, enable_fp_fusion=False,
        )
    return q_out, k_out


@triton.jit
def _norm_rotate_heads(src_ptr, dst_ptr, weight_ptr, stride_src_h, stride_dst_h, num_heads, half, eps, cos, sin,
                       OUT_DTYPE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr):
    """RMSNorm each of ``num_heads`` heads of one token (float32 statistics, as ``rms_norm``),
    then rotate it (as ``_rotate_heads``)."""
    offs_h = tl.arange(0, BLOCK_H)[:, None]
    offs_d = tl.arange(0, BLOCK_HALF)[None, :]
    mask = (offs_h < num_heads) & (offs_d < half)
    src = src_ptr + offs_h * stride_src_h + offs_d
    x1 = tl.load(src, mask=mask, other=0.0)
    x2 = tl.load(src + half, mask=mask, other=0.0)
    x1f = x1.to(tl.float32)
    x2f = x2.to(tl.float32)
    var = (tl.sum(x1f * x1f, axis=1) + tl.sum(x2f * x2f, axis=1)) / (2 * half)
    inv = tl.math.div_rn(1.0, tl.math.sqrt_rn(var + eps))[:, None]
    w1 = tl.load(weight_ptr + offs_d, mask=offs_d < half).to(tl.float32)
    w2 = tl.load(weight_ptr + half + offs_d, mask=offs_d < half).to(tl.float32)
    y1 = (w1 * (x1f * inv).to(x1.dtype).to(tl.float32)).to(OUT_DTYPE).to(tl.float32)
    y2 = (w2 * (x2f * inv).to(x1.dtype).to(tl.float32)).to(OUT_DTYPE).to(tl.float32)
    dst = dst_ptr + offs_h * stride_dst_h + offs_d
    tl.store(dst, (y1 * cos - y2 * sin).to(OUT_DTYPE), mask=mask)
    tl.store(dst + half, (y2 * cos + y1 * sin).to(OUT_DTYPE), mask=mask)


@triton.jit
def _qk_norm_rotary_kernel(
    positions_ptr, q_ptr, k_ptr, q_out_ptr, k_out_ptr, q_weight_ptr, k_weight_ptr, cos_sin_ptr,
    stride_qt, stride_qh, stride_kt, stride_kh, stride_qot, stride_qoh, stride_kot, stride_koh, stride_cos_sin,
    num_q_heads, num_k_heads, half, eps,
    OUT_DTYPE: tl.constexpr, BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    pos = tl.load(positions_ptr + token).to(tl.int64)
    offs_d = tl.arange(0, BLOCK_HALF)
    row = cos_sin_ptr + pos * stride_cos_sin + offs_d
    cos = tl.load(row, mask=offs_d < half, other=0.0)[None, :]
    sin = tl.load(row + half, mask=offs_d < half, other=0.0)[None, :]
    _norm_rotate_heads(q_ptr + token * stride_qt, q_out_ptr + token * stride_qot, q_weight_ptr, stride_qh, stride_qoh,
                       num_q_heads, half, eps, cos, sin, OUT_DTYPE, BLOCK_HQ, BLOCK_HALF)
    _norm_rotate_heads(k_ptr + token * stride_kt, k_out_ptr + token * stride_kot, k_weight_ptr, stride_kh, stride_koh,
                       num_k_heads, half, eps, cos, sin, OUT_DTYPE, BLOCK_HK, BLOCK_HALF)


_TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def qk_norm_rotary(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    eps: float,
    cos_sin_cache: torch.Tensor,
    configs: LaunchConfigs = DEFAULT_LAUNCH_CONFIGS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``rotary_embedding(positions, rms_norm(q, q_weight), rms_norm(k, k_weight))`` in one launch.

    Qwen3's per-head norms read q and k straight from the fused QKV output (strided views are
    fine): no copies, and one kernel where the unfused path runs five. Shapes as
    ``rotary_embedding``; q_weight / k_weight: [D].
    """
    num_tokens, num_q_heads, head_size = q.shape
    num_k_heads = k.shape[1]
    if k.shape[0] != num_tokens or k.shape[2] != head_size or cos_sin_cache.shape[-1] != head_size:
        raise ValueError(f"rotary shapes disagree: q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"cos_sin_cache {tuple(cos_sin_cache.shape)}")
    if q_weight.shape != (head_size,) or k_weight.shape != (head_size,):
        raise ValueError(f"q/k norm weights of shapes {tuple(q_weight.shape)} / {tuple(k_weight.shape)} "
                         f"do not match head size {head_size}")
    if q.stride(-1) != 1:
        q = q.contiguous()
    if k.stride(-1) != 1:
        k = k.contiguous()
    out_dtype = torch.promote_types(q_weight.dtype, q.dtype)
    q_out = torch.empty(q.shape, dtype=out_dtype, device=q.device)
    k_out = torch.empty(k.shape, dtype=out_dtype, device=k.device)
    if num_tokens:
        half = head_size // 2
        _qk_norm_rotary_kernel[(num_tokens,)](
            positions, q, k, q_out, k_out, q_weight.contiguous(), k_weight.contiguous(), cos_sin_cache.contiguous(),
            q.stride(0), q.stride(1), k.stride(0), k.stride(1),
            q_out.stride(0), q_out.stride(1), k_out.stride(0), k_out.stride(1),
            cos_sin_cache.stride(0), num_q_heads, num_k_heads, half, eps,
            OUT_DTYPE=_TL_DTYPES[out_dtype], BLOCK_HQ=triton.next_power_of_2(num_q_heads),
            BLOCK_HK=triton.next_power_of_2(num_k_heads), BLOCK_HALF=triton.next_power_of_2(half),
            **configs.rotary.options, enable_fp_fusion=False,
        )
    return q_out, k_out
