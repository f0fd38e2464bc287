"""Linear, RMSNorm and the vocabulary embedding, on the platform's ops (the gated MLP is one op:
``Ops.silu_mlp``)."""

from __future__ import annotations

import torch
from torch import nn

from vllm_core.platforms.ops import NATIVE_OPS, Ops


class Linear(nn.Module):
    """``y = x @ W^T + b`` with uninitialised parameters (a loader fills them); runs on the
    platform's ``ops.linear`` (``F.linear`` when no ops are given)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, ops: Ops | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False) if bias else None
        self.ops = ops or NATIVE_OPS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.linear(x, self.weight, self.bias)


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float, ops: Ops) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(hidden_size), requires_grad=False)
        self.eps = eps
        self.ops = ops

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):  # type: ignore[no-untyped-def]
        """Without ``residual``: the normalised x. With it: (normalised x + residual, x + residual)."""
        if residual is None:
            return self.ops.rms_norm(x, self.weight, self.eps)
        return self.ops.fused_add_rms_norm(x, residual, self.weight, self.eps)


class VocabEmbedding(nn.Module):
    """Token embeddings on the platform's ``ops.embedding`` (``F.embedding`` when no ops are
    given)."""

    def __init__(self, vocab_size: int, hidden_size: int, ops: Ops | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, hidden_size), requires_grad=False)
        self.ops = ops or NATIVE_OPS

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.ops.embedding(input_ids, self.weight)
