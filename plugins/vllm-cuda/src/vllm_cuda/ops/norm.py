"""RMSNorm and residual-add + RMSNorm, one program per row, float32 statistics.

Numerics follow ``Ops.rms_norm`` step by step: the row is normalised in float32, rounded to the
input dtype, then multiplied by the weight in the promoted dtype of (weight, input). The
reciprocal square root is a correctly rounded ``1 / sqrt`` (as PyTorch's CPU ``rsqrt``), not the
hardware approximation, and FMA contraction is off, so results differ from the native op only
by the order of the float32 sum of squares.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from vllm_cuda.launch import LaunchConfigs
from vllm_cuda.launch_nvidia import DEFAULT_LAUNCH_CONFIGS

# Rows wider than this would spill registers in the single-pass kernel; no model we run has one.
MAX_HIDDEN = 65536


@triton.jit
def _normalize(xf, weight_ptr, offs, mask, hidden, eps, X_DTYPE: tl.constexpr, OUT_DTYPE: tl.constexpr):
    """xf: [BLOCK] float32 row (0 past ``hidden``) -> weight * (xf * rsqrt(mean(xf^2) + eps)).to(X_DTYPE)."""
    var = tl.sum(xf * xf, axis=0) / hidden
    inv = tl.math.div_rn(1.0, tl.math.sqrt_rn(var + eps))
    normed = (xf * inv).to(X_DTYPE)
    w = tl.load(weight_ptr + offs, mask=mask)
    return (w.to(tl.float32) * normed.to(tl.float32)).to(OUT_DTYPE)


@triton.jit
def _rms_norm_kernel(
    x_ptr, weight_ptr, out_ptr, stride_x, stride_out, hidden, eps, OUT_DTYPE: tl.constexpr, BLOCK: tl.constexpr
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < hidden
    x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
    y = _normalize(x.to(tl.float32), weight_ptr, offs, mask, hidden, eps, x.dtype, OUT_DTYPE)
    tl.store(out_ptr + row * stride_out + offs, y, mask=mask)


@triton.jit
def _fused_add_rms_norm_kernel(
    x_ptr,
    residual_ptr,
    weight_ptr,
    out_ptr,
    new_residual_ptr,
    stride_x,
    stride_r,
    stride_out,
    stride_new_r,
    hidden,
    eps,
    OUT_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < hidden
    x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
    r = tl.load(residual_ptr + row * stride_r + offs, mask=mask, other=0.0)
    # The sum is rounded to the input dtype first, exactly like ``x + residual`` in PyTorch.
    s = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)
    tl.store(new_residual_ptr + row * stride_new_r + offs, s, mask=mask)
    y = _normalize(s.to(tl.float32), weight_ptr, offs, mask, hidden, eps, x.dtype, OUT_DTYPE)
    tl.store(out_ptr + row * stride_out + offs, y, mask=mask)


_TL_DTYPES = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def _rows(t: torch.Tensor) -> torch.Tensor:
    """[..., hidden] -> [rows, hidden] with a unit last stride (a view when possible)."""
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 else t.contiguous()


def _check(x: torch.Tensor, weight: torch.Tensor) -> tuple[int, torch.dtype]:
    hidden = x.shape[-1]
    if weight.shape != (hidden,):
        raise ValueError(f"weight of shape {tuple(weight.shape)} does not match hidden size {hidden}")
    if hidden > MAX_HIDDEN:
        raise ValueError(f"hidden size {hidden} exceeds the single-pass kernel's limit {MAX_HIDDEN}")
    return hidden, torch.promote_types(weight.dtype, x.dtype)


def _launch_options(block: int, configs: LaunchConfigs) -> dict[str, int | bool]:
    # FMA contraction stays off on every architecture: it is numerics, not tuning.
    return {**configs.norm.options, "num_warps": configs.norm_num_warps(block), "enable_fp_fusion": False}


def rms_norm(
    x: torch.Tensor, weight: torch.Tensor, eps: float, configs: LaunchConfigs = DEFAULT_LAUNCH_CONFIGS
) -> torch.Tensor:
    """``weight * (x * rsqrt(mean(x^2) + eps))`` with float32 statistics. x: [..., hidden]."""
    hidden, out_dtype = _check(x, weight)
    x2 = _rows(x)
    out = torch.empty(x2.shape, dtype=out_dtype, device=x.device)
    if x2.shape[0]:
        block = triton.next_power_of_2(hidden)
        _rms_norm_kernel[(x2.shape[0],)](
            x2, weight.contiguous(), out, x2.stride(0), out.stride(0), hidden, eps,
            OUT_DTYPE=_TL_DTYPES[out_dtype], BLOCK=block, **_launch_options(block, configs),
        )
    return out.view(*x.shape[:-1], hidden)


def fused_add_rms_norm(
    x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float,
    configs: LaunchConfigs = DEFAULT_LAUNCH_CONFIGS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``residual = x + residual``; returns ``(rms_norm(residual), residual)`` (inputs untouched)."""
    if x.shape != residual.shape or x.dtype != residual.dtype:
        raise ValueError(f"x {tuple(x.shape)} {x.dtype} and residual {tuple(residual.shape)} {residual.dtype} differ")
    hidden, out_dtype = _check(x, weight)
    x2, r2 = _rows(x), _rows(residual)
    out = torch.empty(x2.shape, dtype=out_dtype, device=x.device)
    new_residual = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    if x2.shape[0]:
        block = triton.next_power_of_2(hidden)
        _fused_add_rms_norm_kernel[(x2.shape[0],)](
            x2, r2, weight.contiguous(), out, new_residual,
            x2.stride(0), r2.stride(0), out.stride(0), new_residual.stride(0), hidden, eps,
            OUT_DTYPE=_TL_DTYPES[out_dtype], BLOCK=block, **_launch_options(block, configs),
        )
    return out.view(*x.shape[:-1], hidden), new_residual.view(*x.shape[:-1], hidden)
