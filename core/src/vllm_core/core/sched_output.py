"""What the scheduler hands the model runner for one step, and what comes back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from vllm_core.extensions.state import ExtensionState
from vllm_core.logprobs import PositionLogprobs, PromptLogprobsChunk
from vllm_core.sampling_params import SamplingParams


@dataclass
class ScheduledRequest:
    """One request's share of a step: a prefill chunk or one decode token."""

    req_id: str
    token_ids: list[int]
    """Tokens fed this step (their KV is written; the last one's logits are used if ``sample``)."""
    start_pos: int
    """Position of ``token_ids[0]`` = tokens already in the KV cache."""
    block_ids: list[int]
    """All KV blocks of the request, in position order."""
    sampling_params: SamplingParams
    sample: bool
    """True when this chunk ends at the last known token, so a new token is sampled."""
    num_output_tokens: int
    """Tokens generated so far (min_tokens masking)."""
    eos_token_id: int | None
    prompt_token_ids: Sequence[int] = ()
    """The request's prompt, by reference (repetition penalty, prompt logprobs)."""
    output_token_ids: Sequence[int] = ()
    """The request's generated tokens, by reference to the live list (penalties, bad words)."""
    extensions: ExtensionState = field(default_factory=ExtensionState)
    """The request's extension state (by reference): features read their typed field."""
    draft_token_ids: Sequence[int] = ()
    """Draft tokens at the end of ``token_ids`` (speculative decoding): the runner samples
    ``len(draft_token_ids) + 1`` positions and returns the accepted tokens."""

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class SchedulerOutput:
    """The step's batch, in the order the runner lays out its rows."""

    scheduled: list[ScheduledRequest]
    num_scheduled_tokens: int
    finished_req_ids: set[str] = field(default_factory=set)
    """Requests finished or aborted since the last step: the runner drops their state."""
    preempted_req_ids: set[str] = field(default_factory=set)
    async_step: bool = False
    """The step runs ahead of its results (async scheduling): nothing may be drafted after it."""

    @property
    def is_empty(self) -> bool:
        return not self.scheduled


@dataclass
class ModelRunnerOutput:
    """Sampled tokens of one step, aligned with ``SchedulerOutput.scheduled``."""

    sampled_token_ids: list[list[int]]
    """The new tokens per scheduled request: one for a plain step, ``1 .. k + 1`` for a request
    with ``k`` drafts (the accepted ones, then the correction or bonus token); empty for a
    prefill chunk that samples nothing."""
    logprobs: Mapping[str, PositionLogprobs | list[PositionLogprobs]] | None = None
    """req_id -> the sampled token's logprobs, for requests with ``logprobs`` set (a list, one
    per kept token, in multi-token steps)."""
    prompt_logprobs: dict[str, PromptLogprobsChunk] | None = None
    """req_id -> the prompt logprobs of this step's chunk, for requests with ``prompt_logprobs``."""
    draft_token_ids: dict[str, list[int]] | None = None
    """req_id -> draft tokens proposed for its next step (speculative decoding)."""
