"""``XLAOps``: the native ops, with one rounding fixed for XLA.

XLA rounds a bfloat16 ``dot`` to bfloat16 before adding the bias, PyTorch's ``addmm`` rounds
once after it; the extra rounding, amplified by the next projection, leaves the conformance
tolerance. With a bias in bfloat16 the product is taken in float32 and rounded once (only
layers with a bias pay for it: Qwen2's QKV projection). XLA lowers ``silu`` to
``x * sigmoid(x)``, two roundings in bfloat16 where PyTorch rounds once: ``silu_and_mul``
takes it in float32 and rounds once before the product.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vllm_core.plugins.api import Ops


class XLAOps(Ops):
    """Native ops, rounded where PyTorch rounds (see the module docstring)."""

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        if bias is None or x.dtype != torch.bfloat16:
            return F.linear(x, weight, bias)
        return F.linear(x.float(), weight.float(), bias.float()).to(x.dtype)

    def silu_and_mul(self, x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1] // 2
        gate = x[..., :d].float()
        return (gate * torch.sigmoid(gate)).to(x.dtype) * x[..., d:]
