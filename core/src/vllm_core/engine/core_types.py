"""Messages between the front end (tokenize, detokenize) and the engine core (schedule, run).

They are plain picklable dataclasses so the core can run in another process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vllm_core.extensions.state import ExtensionState
from vllm_core.logprobs import PositionLogprobs, PromptLogprobsChunk
from vllm_core.sampling_params import SamplingParams


@dataclass
class EngineCoreRequest:
    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    eos_token_id: int | None
    max_tokens: int
    """Output limit already bounded by the model length."""
    arrival_time: float
    extensions: ExtensionState = field(default_factory=ExtensionState)
    """Features' typed per-request state (cache salt, adapter, images, ...)."""


@dataclass
class EngineCoreOutput:
    """New tokens of one request from one step."""

    request_id: str
    new_token_ids: list[int]
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    num_cached_tokens: int = 0
    new_logprobs: list[PositionLogprobs] | None = None
    """One entry per new token, when the request asked for logprobs."""
    new_prompt_logprobs: PromptLogprobsChunk | None = None
    scheduled_time: float | None = None
    """``time.monotonic()`` when the core first scheduled the request (sent with its first tokens;
    the front end's queue/prefill/decode metrics are measured from it)."""

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None
