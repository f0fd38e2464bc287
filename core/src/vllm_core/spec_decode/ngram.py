"""n-gram proposer (prompt lookup decoding): guess that the text continues as it did the last
time its current suffix appeared. No model, no device work: it pays off on inputs that repeat
(code edits, summaries quoting their source, structured data).

The lookup is vectorised over the batch: the step's histories are one padded ``[B, L]`` matrix
(``TokenHistory``), and for each n-gram length every window of every row is compared with its
row's suffix in ``n`` elementwise passes; no per-request Python runs in the search.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from vllm_core.config import SpeculativeConfig
from vllm_core.extensions.runner import RunnerContext
from vllm_core.spec_decode.history import PAD, TokenHistory
from vllm_core.spec_decode.proposer import Proposer

if TYPE_CHECKING:
    from vllm_core.core.sched_output import ScheduledRequest


def batched_ngram_lookup(
    tokens: np.ndarray, lengths: np.ndarray, min_n: int, max_n: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``tokens`` ([B, L], PAD after ``lengths[b]``), the ``k`` tokens that
    followed the most recent earlier occurrence of its longest suffix of length
    ``min_n .. max_n``. Returns (drafts [B, k] int64, counts [B] int64: how many are real;
    0 when no suffix recurs, fewer than ``k`` near the end)."""
    num_rows, width = tokens.shape
    found = np.zeros(num_rows, dtype=bool)
    start = np.zeros(num_rows, dtype=np.int64)
    rows = np.arange(num_rows)
    for n in range(max_n, min_n - 1, -1):
        # windows start at i in [0, length - n - 1]: before the suffix, with a token after them
        num_windows = width - n
        if num_windows <= 0:
            continue
        live = ~found & (lengths > n)
        if not live.any():
            continue
        suffix_at = lengths - n  # [B]
        match = np.ones((num_rows, num_windows), dtype=bool)
        for j in range(n):
            s_j = tokens[rows, np.clip(suffix_at + j, 0, width - 1)]  # [B]
            match &= tokens[:, j : j + num_windows] == s_j[:, None]
        match &= np.arange(num_windows)[None, :] < (lengths - n)[:, None]
        match &= live[:, None]
        hit = match.any(axis=1)
        last = num_windows - 1 - np.argmax(match[:, ::-1], axis=1)
        start = np.where(hit, last + n, start)
        found |= hit
    counts = np.where(found, np.clip(lengths - start, 0, k), 0)
    index = np.clip(start[:, None] + np.arange(k)[None, :], 0, width - 1)
    drafts = np.take_along_axis(tokens, index, axis=1).astype(np.int64)
    return drafts, counts


def ngram_lookup(tokens: np.ndarray, min_n: int, max_n: int, k: int) -> list[int]:
    """One sequence's drafts (``batched_ngram_lookup`` of a batch of one)."""
    drafts, counts = batched_ngram_lookup(
        np.asarray(tokens, dtype=np.int64)[None, :], np.array([len(tokens)]), min_n, max_n, k
    )
    return drafts[0, : counts[0]].tolist()


class NgramProposer(Proposer):
    """``speculative_config={"method": "ngram", "num_speculative_tokens": k,
    "prompt_lookup_min": lo, "prompt_lookup_max": hi}``."""

    method: ClassVar[str] = "ngram"

    def __init__(self, config: SpeculativeConfig, context: RunnerContext) -> None:
        super().__init__(config, context)
        self.min_n, self.max_n = config.lookup_range
        self.history = TokenHistory()

    def propose(self, histories: Sequence[Sequence[int]], max_drafts: Sequence[int]) -> list[list[int]]:
        if not histories:
            return []
        lengths = np.array([len(h) for h in histories], dtype=np.int64)
        tokens = np.full((len(histories), max(int(lengths.max()), 1)), PAD, dtype=np.int64)
        for i, h in enumerate(histories):
            tokens[i, : len(h)] = h
        return self._lookup(tokens, lengths, max_drafts)

    def propose_step(
        self, rows: Sequence[ScheduledRequest], new_tokens: Sequence[Sequence[int]], max_drafts: Sequence[int]
    ) -> list[list[int]]:
        slots = self.history.update(rows, new_tokens)
        lengths = self.history.lengths[slots]
        tokens = self.history.tokens[slots, : max(int(lengths.max()), 1)]
        return self._lookup(tokens, lengths, max_drafts)

    def _lookup(self, tokens: np.ndarray, lengths: np.ndarray, max_drafts: Sequence[int]) -> list[list[int]]:
        k = max(max_drafts, default=0)
        if k <= 0:
            return [[] for _ in max_drafts]
        drafts, counts = batched_ngram_lookup(tokens, lengths, self.min_n, self.max_n, k)
        counts = np.minimum(counts, np.asarray(max_drafts, dtype=np.int64))
        counts[lengths <= self.min_n] = 0
        return [d[:c] for d, c in zip(drafts.tolist(), counts.tolist())]

    def finish_requests(self, req_ids: set[str]) -> None:
        self.history.remove(req_ids)
