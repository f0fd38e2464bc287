"""Results handed to users: ``RequestOutput`` holding one ``CompletionOutput`` per sample, and the
``Logprob`` entries of tokens (vLLM's shapes)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Logprob:
    """One candidate token at one position."""

    logprob: float
    rank: int | None = None
    """1-based rank in the distribution (1 = most likely)."""
    decoded_token: str | None = None
    """The token's text (None without a tokenizer or with ``detokenize=False``)."""


SampleLogprobs = list[dict[int, Logprob]]
"""Per generated token: token id -> ``Logprob`` (the chosen token plus the top-k alternatives)."""
PromptLogprobs = list[dict[int, Logprob] | None]
"""Per prompt token (None for the first, which has no context)."""


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
