"""Token log-probabilities: what users get (``Logprob`` dicts per position, vLLM's shapes) and
what the engine core sends for them (plain lists, picklable across processes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LogprobsMode = Literal["raw_logprobs", "raw_logits", "processed_logprobs", "processed_logits"]
"""What ``logprobs`` report (vLLM's ``logprobs_mode``): the model's distribution (raw) or the one
the sampler draws from after penalties, masks, temperature and top-k/top-p/min-p (processed);
as log-probabilities or as logits."""


@dataclass
class Logprob:
    """One candidate token at one position."""

    logprob: float
    rank: int | None = None
    """1-based rank in the distribution (1 = most likely; ties share the worse rank)."""
    decoded_token: str | None = None
    """The token's text (None without a tokenizer or with ``detokenize=False``)."""


SampleLogprobs = list[dict[int, Logprob]]
"""Per generated token: token id -> ``Logprob`` (the chosen token plus the top-k alternatives)."""
PromptLogprobs = list[dict[int, Logprob] | None]
"""Per prompt token (None for the first, which has no context)."""


@dataclass
class PositionLogprobs:
    """One position as the engine core reports it."""

    token_ids: list[int]
    """The position's token first, then the top-k alternatives (most likely first)."""
    logprobs: list[float]
    """Aligned with ``token_ids``."""
    rank: int
    """Rank of ``token_ids[0]``."""


@dataclass
class PromptLogprobsChunk:
    """Prompt logprobs of one prefill chunk."""

    start: int
    """Index in the prompt of the token ``positions[0]`` scores (>= 1)."""
    positions: list[PositionLogprobs]
