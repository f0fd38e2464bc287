"""``CPUOps``: the native ops, with fused ATen kernels where they are faster on the CPU.

Each override computes the same formula as ``vllm_core.platforms.ops.Ops`` (float32
statistics, the same rounding points), so results match the native op to the last bit or
within float32 rounding. ``fused_add_rms_norm`` inherits the native add, which calls the
faster ``rms_norm`` here; rotary embedding stays native: no eager rewrite measured faster.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vllm_core.platforms.ops import Ops


class CPUOps(Ops):
    """Native ops with ``aten::rms_norm`` and an in-place SiLU-and-mul."""

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        shape = (x.shape[-1],)
        if x.dtype == torch.float32 and weight.dtype == torch.float32:
            # One fused kernel: normalise and scale.
            return F.rms_norm(x, shape, weight, eps=eps)
        # Half precision: float32 statistics, round, then scale in the model dtype, as the native
        # op does (aten's half kernel would scale before rounding); ~2x faster than the native op.
        return weight * F.rms_norm(x.float(), shape, eps=eps).to(x.dtype)

    def silu_and_mul(self, x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1] // 2
        # silu allocates the output; multiplying into it saves a second [.., d] buffer.
        return F.silu(x[..., :d]).mul_(x[..., d:])
