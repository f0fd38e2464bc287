"""``SpeculationPolicy``: how many tokens to draft for each row, step by step ("never slower").

Verifying ``k`` drafts costs ``k`` more tokens of target compute per request. That is nearly free
while a step is bound by reading the weights (small batches on a GPU) and pays off when drafts
are accepted; it is a loss when the batch is large (the step is compute-bound) or the drafts
keep being rejected. The policy, evaluated before every proposal:

1. **Batch size.** A step with more sampling requests than ``disable_by_batch_size`` drafts
   nothing: the next step is a plain decode step (vLLM's ``disable_by_batch_size``).
2. **Measured acceptance.** Each request keeps an exponential moving average (weight
   ``EMA_WEIGHT``) of its acceptance rate over its verified steps, starting at 1. When it falls
   below ``min_acceptance_rate`` the request is not drafted for ``backoff`` steps, then probed
   with one drafted step; ``backoff`` doubles after each failed probe (from ``MIN_BACKOFF`` up to
   ``MAX_BACKOFF``) and resets once the rate recovers.

Neither rule changes any output: drafts only decide how many tokens a step may yield. When
the engine wants async scheduling (accelerators), a step that will draft nothing by these rules
runs ahead of its results like any step without speculation (``allows_async_step``); the engine
switches back to synchronous steps when drafting resumes. With the runners in other processes
(``mp``, ``ray`` executors) the driver decides by rule 1 alone (``over_batch_limit``, from the
config): the acceptance averages live with the runners, and asking them every step would wait for
the step in flight, so backed-off steps stay synchronous there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vllm_core.config import SpeculativeConfig

EMA_WEIGHT = 0.3
"""Weight of the latest verified step in a request's acceptance average."""
MIN_BACKOFF = 4
MAX_BACKOFF = 64


@dataclass
class _Acceptance:
    rate: float = 1.0
    """Moving average of accepted / drafted tokens."""
    skip: int = 0
    """Steps left without drafts."""
    backoff: int = MIN_BACKOFF


class SpeculationPolicy:
    """Decides ``max_drafts`` per row from the batch size and each request's acceptance."""

    def __init__(self, config: SpeculativeConfig) -> None:
        self.k = config.num_speculative_tokens
        self.max_batch = config.disable_by_batch_size
        self.min_rate = config.min_acceptance_rate
        self._requests: dict[str, _Acceptance] = {}
        self.num_steps_off_by_batch = 0
        """Steps in which the batch-size rule turned speculation off."""

    @staticmethod
    def over_batch_limit(config: SpeculativeConfig, num_requests: int) -> bool:
        """Rule 1: a step over ``num_requests`` drafts nothing."""
        return config.disable_by_batch_size is not None and num_requests > config.disable_by_batch_size

    def record(self, req_id: str, num_drafts: int, num_accepted: int) -> None:
        """A verified step of a request: ``num_accepted`` of its ``num_drafts`` drafts kept."""
        if num_drafts <= 0:
            return
        state = self._requests.setdefault(req_id, _Acceptance())
        state.rate = (1 - EMA_WEIGHT) * state.rate + EMA_WEIGHT * (num_accepted / num_drafts)
        if state.rate >= self.min_rate:
            state.backoff = MIN_BACKOFF
        elif state.skip == 0:
            state.skip = state.backoff
            state.backoff = min(2 * state.backoff, MAX_BACKOFF)

    def max_drafts(self, req_ids: Sequence[str], num_sampling_rows: int) -> list[int]:
        """Drafts allowed for each of ``req_ids`` (rows of a step with ``num_sampling_rows``
        sampling requests)."""
        if self.max_batch is not None and num_sampling_rows > self.max_batch:
            self.num_steps_off_by_batch += 1
            return [0] * len(req_ids)
        out = []
        for rid in req_ids:
            state = self._requests.get(rid)
            if state is not None and state.skip > 0:
                state.skip -= 1
                out.append(0)
            else:
                out.append(self.k)
        return out

    def allows_async_step(self, req_ids: Sequence[str]) -> bool:
        """Whether the next step over ``req_ids`` will draft nothing, so the engine may schedule
        it ahead of its results (async scheduling): more requests than the batch-size limit, or
        every one of them backed off (their pause counts this step)."""
        if self.max_batch is not None and len(req_ids) > self.max_batch:
            return True
        states = [self._requests.get(rid) for rid in req_ids]
        if not req_ids or not all(s is not None and s.skip > 0 for s in states):
            return False
        for s in states:
            s.skip -= 1  # type: ignore[union-attr]
        return True

    def finish_requests(self, req_ids: set[str]) -> None:
        for rid in req_ids:
            self._requests.pop(rid, None)
