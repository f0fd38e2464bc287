"""``TokenHistory``: every drafted-for request's known tokens in one persistent numpy matrix.

A proposer that looks at whole histories (n-gram lookup) would otherwise rebuild
``prompt + output`` as a Python list per request and step. Here each request owns a row of an
``int32`` matrix, filled once from its prompt and output and then extended by the tokens of
each step; a step's batch is one fancy-index gather of those rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from vllm_core.core.sched_output import ScheduledRequest

PAD = -1
"""Fills a row past its length (never equal to a token id)."""


class TokenHistory:
    """Rows of known tokens per request; grows in both dimensions by doubling."""

    def __init__(self, num_rows: int = 8, width: int = 1024) -> None:
        self.tokens = np.full((num_rows, width), PAD, dtype=np.int32)
        """[rows, width] int32: row ``slot[req]`` holds the request's tokens, PAD after them."""
        self.lengths = np.zeros(num_rows, dtype=np.int64)
        """[rows] int64: tokens in each row."""
        self.slot: dict[str, int] = {}
        self._free: list[int] = list(range(num_rows - 1, -1, -1))

    def _grow(self, rows: int, width: int) -> None:
        old_rows, old_width = self.tokens.shape
        new_rows, new_width = max(rows, old_rows), max(width, old_width)
        if (new_rows, new_width) == (old_rows, old_width):
            return
        tokens = np.full((new_rows, new_width), PAD, dtype=np.int32)
        tokens[:old_rows, :old_width] = self.tokens
        self.tokens = tokens
        self.lengths = np.concatenate([self.lengths, np.zeros(new_rows - old_rows, dtype=np.int64)])
        self._free = list(range(new_rows - 1, old_rows - 1, -1)) + self._free

    def _ensure_width(self, n: int) -> None:
        width = self.tokens.shape[1]
        if n > width:
            while width < n:
                width *= 2
            self._grow(0, width)

    def update(self, rows: Sequence[ScheduledRequest], new_tokens: Sequence[Sequence[int]]) -> np.ndarray:
        """Bring each row's history to ``prompt + output + new_tokens``; returns their slots
        ([len(rows)] int64). A request seen for the first time, or whose history no longer has
        the expected length (it was preempted and restarted elsewhere), is copied in full."""
        slots = np.empty(len(rows), dtype=np.int64)
        for i, (r, new) in enumerate(zip(rows, new_tokens)):
            known = len(r.prompt_token_ids) + len(r.output_token_ids)
            total = known + len(new)
            slot = self.slot.get(r.req_id)
            if slot is None:
                if not self._free:
                    self._grow(2 * self.tokens.shape[0], 0)
                slot = self.slot[r.req_id] = self._free.pop()
            self._ensure_width(total)
            row, old = self.tokens[slot], int(self.lengths[slot])
            if old != known:  # first sight (or out of step): copy everything
                row[: len(r.prompt_token_ids)] = r.prompt_token_ids
                row[len(r.prompt_token_ids) : known] = r.output_token_ids
                if old > total:
                    row[total:old] = PAD
            row[known:total] = new
            self.lengths[slot] = total
            slots[i] = slot
        return slots

    def remove(self, req_ids: set[str]) -> None:
        for rid in req_ids:
            slot = self.slot.pop(rid, None)
            if slot is not None:
                self.tokens[slot, : self.lengths[slot]] = PAD
                self.lengths[slot] = 0
                self._free.append(slot)
