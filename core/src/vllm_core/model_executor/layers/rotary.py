"""Rotary position embedding: a cos/sin table per position, applied by the platform's op.

Frequencies come from the model config as ``transformers`` computes them, so every rope type
it knows (default, llama3, linear, dynamic, yarn, longrope) gives the same table.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vllm_core.model_executor.layers.basic import RMSNorm
from vllm_core.platforms.ops import Ops


def rope_parameters(config: Any) -> dict[str, Any]:
    """The config's rope settings in the transformers 5 shape (rope_type, rope_theta, ...)."""
    params = getattr(config, "rope_parameters", None)
    if params:
        return dict(params)
    scaling = dict(getattr(config, "rope_scaling", None) or {})
    scaling.setdefault("rope_type", scaling.pop("type", "default"))
    scaling["rope_theta"] = getattr(config, "rope_theta", 10000.0)
    return scaling


def compute_inv_freq(config: Any, head_dim: int) -> tuple[torch.Tensor, float]:
    """(inv_freq [head_dim / 2] float32, attention scaling) for the config's rope type."""
    params = rope_parameters(config)
    rope_type = params.get("rope_type", "default")
    if rope_type == "default":
        base = float(params["rope_theta"])
        exponent = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
        return 1.0 / (base**exponent), 1.0
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    if rope_type not in ROPE_INIT_FUNCTIONS:
        raise ValueError(
            f"rope_type {rope_type!r} is not supported; supported: default, {', '.join(ROPE_INIT_FUNCTIONS)}"
        )
    inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](config, torch.device("cpu"))
    return inv_freq.float(), float(scaling)


class RotaryEmbedding(nn.Module):
    """Holds ``cos_sin_cache`` [max_positions, head_dim] (cos | sin) in float32."""

    def __init__(self, config: Any, head_dim: int, max_positions: int, ops: Ops) -> None:
        super().__init__()
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float32)  # the table is float32 whatever the model dtype
        try:
            inv_freq, scaling = compute_inv_freq(config, head_dim)
            t = torch.arange(max_positions, dtype=torch.int64).float()
            freqs = torch.outer(t, inv_freq.to(t.device))
            cache = torch.cat((freqs.cos() * scaling, freqs.sin() * scaling), dim=-1)
        finally:
            torch.set_default_dtype(old)
        self.cos_sin_cache: torch.Tensor
        self.register_buffer("cos_sin_cache", cache, persistent=False)
        self.ops = ops

    def forward(
        self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ops.rotary_embedding(positions, q, k, self.cos_sin_cache)

    def with_qk_norm(
        self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, q_norm: RMSNorm, k_norm: RMSNorm
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward(positions, q_norm(q), k_norm(k))`` through one op (``Ops.qk_norm_rotary``)."""
        if q_norm.eps != k_norm.eps:
            raise ValueError(f"q_norm eps {q_norm.eps} differs from k_norm eps {k_norm.eps}")
        return self.ops.qk_norm_rotary(positions, q, k, q_norm.weight, k_norm.weight, q_norm.eps, self.cos_sin_cache)
