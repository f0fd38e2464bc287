"""Speculative-decoding counters (vLLM's ``spec_decode`` metrics) and their periodic log line."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

logger = logging.getLogger("vllm_core.spec_decode")

LOG_INTERVAL_S = 10.0
"""Seconds between two acceptance log lines (while speculation verifies drafts)."""


@dataclass(frozen=True)
class SpecDecodeStats:
    """Cumulative counters since the engine started (a snapshot)."""

    num_drafts: int = 0
    """Verified steps of a request that carried drafts (``vllm:spec_decode_num_drafts``)."""
    num_draft_tokens: int = 0
    """Draft tokens verified (``vllm:spec_decode_num_draft_tokens``)."""
    num_accepted_tokens: int = 0
    """Draft tokens accepted (``vllm:spec_decode_num_accepted_tokens``)."""
    accepted_per_pos: tuple[int, ...] = ()
    """How often the draft at each position was accepted
    (``vllm:spec_decode_num_accepted_tokens_per_pos``)."""

    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else 0.0

    @property
    def mean_acceptance_length(self) -> float:
        """Tokens a drafted step yields on average: accepted drafts plus the one sampled token."""
        return 1.0 + self.num_accepted_tokens / self.num_drafts if self.num_drafts else 0.0


@dataclass
class SpecDecodeCounters:
    """The live counters of one engine."""

    k: int
    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    accepted_per_pos: list[int] = field(default_factory=list)
    _last_log: float = field(default_factory=time.monotonic)
    _logged: SpecDecodeStats = field(default_factory=SpecDecodeStats)

    def __post_init__(self) -> None:
        self.accepted_per_pos = [0] * self.k

    def record(self, num_drafts: int, num_accepted: int) -> None:
        self.num_drafts += 1
        self.num_draft_tokens += num_drafts
        self.num_accepted_tokens += num_accepted
        for pos in range(min(num_accepted, self.k)):
            self.accepted_per_pos[pos] += 1

    def snapshot(self) -> SpecDecodeStats:
        return SpecDecodeStats(
            self.num_drafts, self.num_draft_tokens, self.num_accepted_tokens, tuple(self.accepted_per_pos)
        )

    def maybe_log(self, now: float | None = None) -> None:
        """Every ``LOG_INTERVAL_S``: the acceptance of the drafts verified since the last line."""
        now = time.monotonic() if now is None else now
        if now - self._last_log < LOG_INTERVAL_S:
            return
        cur, prev = self.snapshot(), self._logged
        self._last_log, self._logged = now, cur
        drafts = cur.num_drafts - prev.num_drafts
        if not drafts:
            return
        drafted = cur.num_draft_tokens - prev.num_draft_tokens
        accepted = cur.num_accepted_tokens - prev.num_accepted_tokens
        per_pos = [(a - b) / drafts for a, b in zip(cur.accepted_per_pos, prev.accepted_per_pos or [0] * self.k)]
        logger.info(
            "SpecDecoding metrics: mean acceptance length %.2f, accepted %d/%d draft tokens (%.1f%%), "
            "per-position acceptance %s",
            1 + accepted / drafts, accepted, drafted, 100 * accepted / max(drafted, 1),
            ", ".join(f"{r:.3f}" for r in per_pos),
        )
