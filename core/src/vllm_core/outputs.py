"""Results handed to users: ``RequestOutput`` holding one ``CompletionOutput`` per sample, and the
``Logprob`` entries of tokens (vLLM's shapes)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vllm_core.logprobs import Logprob, PromptLogprobs, SampleLogprobs

__all__ = ["CompletionOutput", "Logprob", "PromptLogprobs", "RequestOutput", "SampleLogprobs"]


@dataclass
class CompletionOutput:
    """One generated sequence of a request."""

    index: int
    """Position among the request's ``n`` samples."""
    text: str
    """Generated text (stop string removed unless asked to keep it)."""
    token_ids: list[int]
    """Generated token ids."""
    finish_reason: str | None = None
    """``stop`` (EOS, stop string or stop token), ``length`` or ``abort``; None while running."""
    stop_reason: int | str | None = None
    """The stop string or stop token id that ended the sequence; None for EOS or length."""
    cumulative_logprob: float | None = None
    """Sum of the generated tokens' logprobs (None unless logprobs were asked for)."""
    logprobs: SampleLogprobs | None = None
    """Per generated token, when ``SamplingParams.logprobs`` is set."""

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    """The state of one request: its prompt and its samples so far."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    num_cached_tokens: int = 0
    """Prompt tokens served from the prefix cache."""
    metrics: dict[str, float] = field(default_factory=dict)
    prompt_logprobs: PromptLogprobs | None = None
    """Per prompt token, when ``SamplingParams.prompt_logprobs`` is set."""
