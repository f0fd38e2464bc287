"""``silu_and_mul``: the gated MLP activation, one program per (row, column tile).

Rounds where ``F.silu(gate) * up`` rounds in PyTorch: silu in float32 rounded to the input
dtype, then the product rounded again.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from vllm_cuda.launch import LaunchConfigs
from vllm_cuda.launch_nvidia import DEFAULT_LAUNCH_CONFIGS


@triton.jit
def _silu_and_mul_kernel(x_ptr, out_ptr, stride_x, stride_out, d, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < d
    gate = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
    up = tl.load(x_ptr + row * stride_x + d + offs, mask=mask, other=0.0)
    g = gate.to(tl.float32)
    silu = (g / (1.0 + tl.exp(-g))).to(gate.dtype)
    out = (silu.to(tl.float32) * up.to(tl.float32)).to(gate.dtype)
    tl.store(out_ptr + row * stride_out + offs, out, mask=mask)


def silu_and_mul(x: torch.Tensor, configs: LaunchConfigs = DEFAULT_LAUNCH_CONFIGS) -> torch.Tensor:
    """x: [..., 2 * d] (gate, up) -> silu(gate) * up: [..., d]."""
    if x.shape[-1] % 2:
        raise ValueError(f"silu_and_mul needs an even last dimension, got {x.shape[-1]}")
    d = x.shape[-1] // 2
    x2 = x.reshape(-1, 2 * d)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    out = torch.empty((x2.shape[0], d), dtype=x.dtype, device=x.device)
    if x2.shape[0] and d:
        block = min(configs.silu_block, triton.next_power_of_2(d))
        _silu_and_mul_kernel[(x2.shape[0], triton.cdiv(d, block))](
            x2, out, x2.stride(0), out.stride(0), d, BLOCK=block, **configs.silu.options
        )
    return out.view(*x.shape[:-1], d)
