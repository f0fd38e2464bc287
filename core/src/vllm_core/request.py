"""``Request``: the mutable state of one sequence inside the engine."""

from __future__ import annotations

import enum
import time
from typing import NewType

from vllm_core.extensions.state import ExtensionState
from vllm_core.sampling_params import SamplingParams

RequestId = NewType("RequestId", str)


class RequestStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED_STOPPED = "finished_stopped"
    FINISHED_LENGTH_CAPPED = "finished_length_capped"
    FINISHED_ABORTED = "finished_aborted"

    @property
    def is_finished(self) -> bool:
        return self in _FINISHED

    @property
    def finish_reason(self) -> str | None:
        return _FINISH_REASON.get(self)


_FINISHED = {
    RequestStatus.FINISHED_STOPPED,
    RequestStatus.FINISHED_LENGTH_CAPPED,
    RequestStatus.FINISHED_ABORTED,
}
_FINISH_REASON = {
    RequestStatus.FINISHED_STOPPED: "stop",
    RequestStatus.FINISHED_LENGTH_CAPPED: "length",
    RequestStatus.FINISHED_ABORTED: "abort",
}


class Request:
    """One sequence: prompt, generated tokens, how much of it is in the KV cache.

    ``num_computed_tokens`` counts tokens whose KV is in the cache; the scheduler advances it.
    After preemption (recompute) it drops to 0 and prompt + output are prefilled again.
    """

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling_params: SamplingParams,
        eos_token_id: int | None,
        max_tokens: int,
        arrival_time: float | None = None,
        extensions: ExtensionState | None = None,
    ) -> None:
        self.request_id = RequestId(request_id)
        self.prompt_token_ids = prompt_token_ids
        self.sampling_params = sampling_params
        self.eos_token_id = eos_token_id
        self.max_tokens = max_tokens
        """Resolved output limit (params.max_tokens bounded by the model length)."""
        self.arrival_time = time.monotonic() if arrival_time is None else arrival_time
        self.status = RequestStatus.WAITING
        self.output_token_ids: list[int] = []
        self.all_token_ids: list[int] = list(prompt_token_ids)
        self.num_computed_tokens = 0
        self.num_pending_tokens = 0
        """Tokens sampled by a step still in flight (async scheduling): already counted in
        ``num_computed_tokens`` by the scheduler, not yet in ``output_token_ids``."""
        self.num_cached_tokens = -1
        """Prompt tokens found in the prefix cache at first scheduling (-1: not yet scheduled)."""
        self.num_preemptions = 0
        self.stop_reason: int | str | None = None
        self.block_hashes: list[bytes] = []  # BlockHash values (vllm_core.core.block_pool)
        """Chained hashes of the full blocks of ``all_token_ids`` computed so far."""
        self.extensions = extensions if extensions is not None else ExtensionState()
        """Features' typed per-request state (``vllm_core.extensions``): cache salt, adapter, ..."""
        self.spec_token_ids: list[int] = []
        """Draft tokens proposed for the next step (speculative decoding); verified, never cached."""

    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def is_finished(self) -> bool:
        return self.status.is_finished

    def append_output_token(self, token_id: int) -> None:
        self.output_token_ids.append(token_id)
        self.all_token_ids.append(token_id)

    def __repr__(self) -> str:
        return (
            f"Request({self.request_id!r}, status={self.status.value}, "
            f"tokens={self.num_tokens}, computed={self.num_computed_tokens})"
        )
