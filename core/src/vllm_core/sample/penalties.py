"""Repetition, frequency and presence penalties on a batch of logits.

* repetition (``transformers``' ``RepetitionPenaltyLogitsProcessor``, vLLM's meaning): every
  token of the prompt or the output has its logit divided by the penalty when positive and
  multiplied by it otherwise;
* frequency / presence (OpenAI's meaning, output tokens only):
  ``logit -= frequency * count + presence * (count > 0)``.
"""

from __future__ import annotations

import torch

from vllm_core.sample.metadata import PenaltyTensors


def _one_hot_rows(ids: torch.Tensor, vocab: int, dtype: torch.dtype) -> torch.Tensor:
    """[R, L] padded token ids -> [R, vocab] counts (padding lands in a dropped scratch column)."""
    cols = torch.where(ids < 0, vocab, ids)
    counts = torch.zeros(ids.shape[0], vocab + 1, dtype=dtype, device=ids.device)
    counts.scatter_add_(1, cols, torch.ones_like(cols, dtype=dtype))
    return counts[:, :vocab]


def output_token_counts(output_ids: torch.Tensor, vocab: int) -> torch.Tensor:
    """[R, vocab] float32: how often each token was generated per row."""
    return _one_hot_rows(output_ids, vocab, torch.float32)


def apply_penalties(logits: torch.Tensor, penalties: PenaltyTensors) -> torch.Tensor:
    """logits: [R, vocab] float32 -> the penalised logits (a new tensor)."""
    vocab = logits.shape[-1]
    counts = output_token_counts(penalties.output_ids, vocab)
    if penalties.prompt_ids is not None:
        seen = (counts > 0) | (_one_hot_rows(penalties.prompt_ids, vocab, torch.int32) > 0)
        rep = penalties.repetition.unsqueeze(1)
        logits = torch.where(seen, torch.where(logits > 0, logits / rep, logits * rep), logits)
    return logits - penalties.frequency.unsqueeze(1) * counts - penalties.presence.unsqueeze(1) * (counts > 0)
