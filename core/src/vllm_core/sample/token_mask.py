"""Token bitmasks: the allowed tokens of some of a step's sampling rows, applied by the sampler
before anything else draws from the logits (structured outputs; any runner extension's
``logits_mask``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class TokenBitmask:
    """Allowed tokens of the constrained rows."""

    rows: torch.Tensor
    """[K] int64: rows of the step's sampling batch."""
    bits: torch.Tensor
    """[K, ceil(vocab / 32)] int32: bit j of word w allows token 32 * w + j."""


def apply_token_bitmask(logits: torch.Tensor, bitmask: TokenBitmask) -> torch.Tensor:
    """Disallowed tokens of the constrained rows -> -inf (a new tensor)."""
    vocab = logits.shape[-1]
    shifts = torch.arange(32, device=logits.device, dtype=torch.int32)
    allowed = ((bitmask.bits.unsqueeze(-1) >> shifts) & 1).bool().flatten(1)[:, :vocab]
    banned = torch.zeros_like(logits, dtype=torch.bool)
    banned[bitmask.rows] = ~allowed
    return logits.masked_fill(banned, float("-inf"))


def merge_token_bitmasks(masks: Sequence[TokenBitmask]) -> TokenBitmask | None:
    """One bitmask from several extensions' (a row in more than one keeps the tokens all allow)."""
    if not masks:
        return None
    if len(masks) == 1:
        return masks[0]
    rows = torch.cat([m.rows for m in masks])
    bits = torch.cat([m.bits for m in masks])
    unique, inverse = torch.unique(rows, return_inverse=True)
    merged = torch.full((unique.shape[0], bits.shape[1]), -1, dtype=bits.dtype, device=bits.device)
    for i in range(rows.shape[0]):
        j = int(inverse[i])
        merged[j] &= bits[i]
    return TokenBitmask(unique, merged)
