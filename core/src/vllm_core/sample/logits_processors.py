"""Batched masks and biases applied before temperature: ``logit_bias``, ``allowed_token_ids``
and banned tokens (``min_tokens`` EOS/stop ids, bad words). Each returns a new tensor."""

from __future__ import annotations

import torch

from vllm_core.sample.metadata import TokenIndex

NEG_INF = float("-inf")


def apply_logit_bias(logits: torch.Tensor, bias: TokenIndex) -> torch.Tensor:
    assert bias.values is not None
    return logits.index_put((bias.rows, bias.tokens), bias.values, accumulate=True)


def apply_allowed_tokens(logits: torch.Tensor, allowed: TokenIndex) -> torch.Tensor:
    """Rows named in ``allowed`` keep only their listed tokens; other rows are untouched."""
    banned = torch.zeros_like(logits, dtype=torch.bool)
    banned[allowed.rows] = True
    banned[allowed.rows, allowed.tokens] = False
    return logits.masked_fill(banned, NEG_INF)


def apply_banned_tokens(logits: torch.Tensor, banned: list[tuple[int, list[int]]]) -> torch.Tensor:
    rows = [row for row, ids in banned for _ in ids]
    cols = [t for _, ids in banned for t in ids]
    index = (torch.tensor(rows, device=logits.device), torch.tensor(cols, device=logits.device))
    return logits.index_put(index, torch.tensor(NEG_INF, device=logits.device))
