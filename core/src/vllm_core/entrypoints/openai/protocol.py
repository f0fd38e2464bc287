"""Request and response bodies of the OpenAI-compatible API, with vLLM's extra sampling fields.

Unknown request fields are ignored (as OpenAI and vLLM do); wrong types are a 400.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vllm_core.errors import RequestError
from vllm_core.sampling_params import BeamSearchParams, SamplingParams, StructuredOutputsParams


def random_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class StreamOptions(_Request):
    include_usage: bool = False
    continuous_usage_stats: bool = False


class SamplingFields(_Request):
    """Fields shared by completions and chat: OpenAI's, then vLLM's extras."""

    model: str | None = None
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    """A 64-bit signed integer (vLLM's range); -1 means no seed."""
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # vLLM extras
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int = 0
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    allowed_token_ids: list[int] | None = None
    bad_words: list[str] | None = None
    truncate_prompt_tokens: int | None = None
    request_id: str | None = None
    structured_outputs: dict[str, Any] | None = None
    """vLLM's constraint: exactly one of json, regex, choice, grammar, json_object."""
    guided_json: Union[str, dict[str, Any], None] = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    return_token_ids: bool = False
    """vLLM's extra: the prompt's and each choice's token ids in the response (and each chunk's)."""
    use_beam_search: bool = False
    """vLLM's beam search instead of sampling: ``n`` beams (``best_of`` where the request has it)."""
    length_penalty: float = 1.0
    """Beam search ranks by cumulative logprob / length ** length_penalty."""

    @model_validator(mode="after")
    def _stream_options_need_stream(self) -> SamplingFields:
        if self.stream_options is not None and not self.stream:
            raise ValueError("Stream options can only be defined when `stream=True`.")
        return self

    def structured(self) -> StructuredOutputsParams | None:
        """The request's own structured-output constraint (new or older vLLM field names)."""
        old = {"json": self.guided_json, "regex": self.guided_regex, "choice": self.guided_choice,
               "grammar": self.guided_grammar}
        old = {k: v for k, v in old.items() if v is not None}
        if self.structured_outputs is not None and old:
            raise RequestError("give structured_outputs or the guided_* fields, not both")
        spec = self.structured_outputs if self.structured_outputs is not None else old
        if not spec:
            return None
        try:
            return StructuredOutputsParams(**spec)
        except TypeError as exc:
            raise RequestError(f"structured_outputs: {exc}") from None

    def sampling_params(self, max_tokens: int | None, default_max_tokens: int | None, **extra: Any) -> SamplingParams:
        """The engine's ``SamplingParams``; a field the engine does not support yet is a 400."""
        if self.length_penalty != 1.0:
            raise RequestError(
                f"length_penalty={self.length_penalty} only applies with use_beam_search=true; "
                "turn beam search on or leave length_penalty out"
            )
        temperature = 1.0 if self.temperature is None else self.temperature
        if temperature == 0 and self.n > 1:
            raise RequestError(f"n must be 1 when using greedy sampling, got {self.n}.")
        values: dict[str, Any] = {
            "n": self.n,
            "max_tokens": max_tokens if max_tokens is not None else default_max_tokens,
            "temperature": temperature,
            "top_p": 1.0 if self.top_p is None else self.top_p,
            "top_k": 0 if self.top_k is None else self.top_k,
            "min_p": 0.0 if self.min_p is None else self.min_p,
            "seed": None if self.seed == -1 else self.seed,
            "stop": self.stop or None,
            "stop_token_ids": self.stop_token_ids,
            "min_tokens": self.min_tokens,
            "ignore_eos": self.ignore_eos,
            "include_stop_str_in_output": self.include_stop_str_in_output,
            "skip_special_tokens": self.skip_special_tokens,
        }
        optional: dict[str, tuple[Any, Any]] = {
            "presence_penalty": (self.presence_penalty, 0.0),
            "frequency_penalty": (self.frequency_penalty, 0.0),
            "repetition_penalty": (self.repetition_penalty, 1.0),
            "spaces_between_special_tokens": (self.spaces_between_special_tokens, True),
            "allowed_token_ids": (self.allowed_token_ids, None),
            "bad_words": (self.bad_words, None),
            "truncate_prompt_tokens": (self.truncate_prompt_tokens, None),
            "logit_bias": (
                None if self.logit_bias is None else {_token_key(k): v for k, v in self.logit_bias.items()}, None
            ),
        }
        own = self.structured()
        if own is not None:
            if "structured_outputs" in extra:
                raise RequestError("structured_outputs cannot be combined with response_format or a forced tool_choice")
            extra = {**extra, "structured_outputs": own}
        for name, (value, default) in {**optional, **{k: (v, None) for k, v in extra.items()}}.items():
            if value is None or value == default:
                continue
            values[name] = value
        supported = SamplingParams.__dataclass_fields__
        unsupported = sorted(k for k in values if k not in supported)
        if unsupported:
            raise RequestError(f"this server does not support {', '.join(unsupported)} yet; leave it out")
        return SamplingParams(**values)

    def beam_search_params(self, max_tokens: int, beam_width: int) -> BeamSearchParams:
        """``use_beam_search``'s parameters. Beams follow the model's raw logprobs greedily, so a
        sampling field that would change the result is a 400 rather than silently ignored."""
        ignored = {
            "temperature": self.temperature not in (None, 0.0),
            "top_p": self.top_p not in (None, 1.0),
            "top_k": self.top_k not in (None, 0, -1),
            "min_p": self.min_p not in (None, 0.0),
            "presence_penalty": self.presence_penalty not in (None, 0.0),
            "frequency_penalty": self.frequency_penalty not in (None, 0.0),
            "repetition_penalty": self.repetition_penalty not in (None, 1.0),
            "logit_bias": bool(self.logit_bias),
            "stop": bool(self.stop),
            "stop_token_ids": bool(self.stop_token_ids),
            "min_tokens": self.min_tokens != 0,
            "allowed_token_ids": self.allowed_token_ids is not None,
            "bad_words": bool(self.bad_words),
            "truncate_prompt_tokens": self.truncate_prompt_tokens is not None,
            "structured_outputs": self.structured() is not None,
        }
        bad = [name for name, is_set in ignored.items() if is_set]
        if bad:
            raise RequestError(
                f"use_beam_search does not support {', '.join(bad)}: beams follow the model's raw logprobs "
                "greedily (temperature 0); leave these out or turn beam search off"
            )
        return BeamSearchParams(beam_width=beam_width, max_tokens=max_tokens, ignore_eos=self.ignore_eos,
                                length_penalty=self.length_penalty,
                                include_stop_str_in_output=self.include_stop_str_in_output)


def _token_key(key: str) -> int:
    try:
        return int(key)
    except ValueError:
        raise RequestError(f"logit_bias keys must be token ids, got {key!r}") from None


PromptInput = Union[str, list[str], list[int], list[list[int]]]


class CompletionRequest(SamplingFields):
    prompt: PromptInput
    max_tokens: int | None = 16
    echo: bool = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None
    prompt_logprobs: int | None = None
    add_special_tokens: bool = True
    cache_salt: str | None = None
    """vLLM's extra: requests with different salts never share prefix-cache blocks."""


class FunctionDefinition(_Request):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(_Request):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(_Request):
    name: str


class NamedToolChoice(_Request):
    type: Literal["function"] = "function"
    function: NamedFunction


class ChatCompletionRequest(SamplingFields):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[ChatTool] | None = None
    tool_choice: Union[Literal["none", "auto", "required"], NamedToolChoice, None] = None
    parallel_tool_calls: bool = True
    response_format: dict[str, Any] | None = None
    # vLLM extras
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    echo: bool = False
    cache_salt: str | None = None
    """vLLM's extra: requests with different salts never share prefix-cache blocks."""
    prompt_logprobs: int | None = None
    """vLLM's extra: logprobs of the templated prompt's tokens and their top alternatives."""


class UsageInfo(_Response):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: dict[str, int] | None = None


class CompletionChoice(_Response):
    index: int
    text: str
    logprobs: Any = None
    finish_reason: str | None = None
    stop_reason: Union[int, str, None] = None
    prompt_logprobs: list[dict[str, Any] | None] | None = None
    """vLLM's extra: per prompt token (the first null), when the request asked for them."""
    prompt_token_ids: list[int] | None = None
    """vLLM's extra (``return_token_ids``); in a stream, on each choice's first chunk."""
    token_ids: list[int] | None = None
    """vLLM's extra (``return_token_ids``): this choice's (or this chunk's new) token ids."""


class CompletionResponse(_Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


class FunctionCall(_Response):
    name: str
    arguments: str


class ToolCall(_Response):
    id: str = Field(default_factory=lambda: random_id("chatcmpl-tool"))
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Response):
    role: str = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)


class ChatChoice(_Response):
    index: int
    message: ChatMessage
    logprobs: Any = None
    finish_reason: str | None = None
    stop_reason: Union[int, str, None] = None
    token_ids: list[int] | None = None
    """vLLM's extra (``return_token_ids``)."""


class ChatCompletionResponse(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo
    prompt_logprobs: list[dict[str, Any] | None] | None = None
    """vLLM's extra: per prompt token of the templated prompt (the first null)."""
    prompt_token_ids: list[int] | None = None
    """vLLM's extra (``return_token_ids``)."""


class DeltaFunctionCall(_Response):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(_Response):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall | None = None


class DeltaMessage(_Response):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[DeltaToolCall] = Field(default_factory=list)


class ChatStreamChoice(_Response):
    index: int
    delta: DeltaMessage
    logprobs: Any = None
    finish_reason: str | None = None
    stop_reason: Union[int, str, None] = None
    token_ids: list[int] | None = None
    """vLLM's extra (``return_token_ids``): this chunk's new token ids."""


class ChatCompletionChunk(_Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatStreamChoice]
    usage: UsageInfo | None = None
    prompt_token_ids: list[int] | None = None
    """vLLM's extra (``return_token_ids``): on the first chunk."""


class TokenizeRequest(_Request):
    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True
    chat_template: str | None = None


class DetokenizeRequest(_Request):
    model: str | None = None
    tokens: list[int]


class ErrorInfo(_Response):
    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(_Response):
    error: ErrorInfo
