"""n-gram proposer (prompt lookup decoding): guess that the text continues as it did the last
time its current suffix appeared. No model, no device work: it pays off on inputs that repeat
(code edits, summaries quoting their source, structured data)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from vllm_core.config import SpeculativeConfig
from vllm_core.extensions.runner import RunnerContext
from vllm_core.spec_decode.proposer import Proposer


def ngram_lookup(tokens: np.ndarray, min_n: int, max_n: int, k: int) -> list[int]:
    """The ``k`` tokens that followed the most recent earlier occurrence of the longest suffix
    of ``tokens`` of length ``min_n .. max_n`` (fewer near the end; [] when none occurs)."""
    total = len(tokens)
    for n in range(min(max_n, total - 1), min_n - 1, -1):
        suffix = tokens[total - n :]
        # windows that start before the suffix itself and have at least one token after them
        windows = np.lib.stride_tricks.sliding_window_view(tokens[: total - 1], n)
        hits = np.flatnonzero((windows == suffix).all(axis=1))
        if hits.size:
            start = int(hits[-1]) + n
            return tokens[start : start + k].tolist()
    return []


class NgramProposer(Proposer):
    """``speculative_config={"method": "ngram", "num_speculative_tokens": k,
    "prompt_lookup_min": lo, "prompt_lookup_max": hi}``."""

    method: ClassVar[str] = "ngram"

    def __init__(self, config: SpeculativeConfig, context: RunnerContext) -> None:
        super().__init__(config, context)
        self.min_n, self.max_n = config.lookup_range

    def propose(self, histories: Sequence[Sequence[int]], max_drafts: Sequence[int]) -> list[list[int]]:
        out: list[list[int]] = []
        for history, k in zip(histories, max_drafts):
            if k <= 0 or len(history) <= self.min_n:
                out.append([])
                continue
            out.append(ngram_lookup(np.asarray(history, dtype=np.int64), self.min_n, self.max_n, k))
        return out
