"""M-RoPE (Qwen2-VL's multimodal rotary embedding) through the platform's rotary op.

Each of the ``head_dim / 2`` rotary frequencies belongs to one axis (``mrope_section``, e.g.
[16, 24, 24]: temporal, height, width); a token's angle for that frequency uses its position
on that axis. The runner extension hands the model [3, T] positions; this module gathers, per
token, the cos/sin row of each axis' position from the ordinary table and lets the platform's
``Ops.rotary_embedding`` apply the composed rows (positions ``0..T-1`` into a per-step table),
so every attention backend and platform that has the op supports M-RoPE. With 1-D positions
(text tokens: all three axes equal) it is ordinary rotary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class MRotaryEmbedding(nn.Module):
    """Wraps a layer's ``RotaryEmbedding`` (its ``cos_sin_cache`` and ``ops``); one instance is
    shared by every layer, so the per-step table is composed once per forward pass."""

    def __init__(self, base: nn.Module, mrope_section: Sequence[int]) -> None:
        super().__init__()
        self.base = base
        self.ops: Any = base.ops
        cache: torch.Tensor = base.cos_sin_cache  # type: ignore[assignment]
        half = cache.shape[-1] // 2
        if sum(mrope_section) != half:
            raise ValueError(f"mrope_section {list(mrope_section)} must sum to head_dim / 2 = {half}")
        axis = torch.cat([torch.full((n,), i % 3, dtype=torch.int64) for i, n in enumerate(mrope_section)])
        self.axis_of_freq: torch.Tensor
        self.register_buffer("axis_of_freq", axis.to(cache.device), persistent=False)
        self._key: torch.Tensor | None = None
        self._table: torch.Tensor | None = None

    def _composed(self, positions: torch.Tensor) -> torch.Tensor:
        """[3, T] positions -> [T, head_dim] cos|sin rows (cached for the step's tensor)."""
        if self._key is positions and self._table is not None:
            return self._table
        cache: torch.Tensor = self.base.cos_sin_cache  # type: ignore[assignment]
        half = cache.shape[-1] // 2
        cos, sin = cache[:, :half], cache[:, half:]
        # token t, frequency j: the row of position positions[axis(j), t]
        rows = positions.index_select(0, self.axis_of_freq).t()  # [T, half]
        cols = torch.arange(half, device=cache.device).expand_as(rows)
        table = torch.cat([cos[rows, cols], sin[rows, cols]], dim=-1)
        self._key, self._table = positions, table
        return table

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if positions.dim() == 1:
            return self.base.forward(positions, q, k)  # type: ignore[no-any-return]
        table = self._composed(positions)
        index = torch.arange(table.shape[0], device=table.device)
        return self.ops.rotary_embedding(index, q, k, table)  # type: ignore[no-any-return]
