"""What every endpoint shares: the served model names, request limits, running several engine
requests at once, and server-sent events."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from vllm_core.engine.async_llm import AsyncLLM
from vllm_core.entrypoints.openai.errors import APIError, sse_error
from vllm_core.entrypoints.openai.served_models import ServedModels
from vllm_core.errors import RequestError
from vllm_core.outputs import RequestOutput
from vllm_core.sample.admission import truncate_prompt

MAX_N = 128
"""Most samples one request may ask for (``n`` times the number of prompts)."""


@dataclass(frozen=True)
class ServerSettings:
    """Per-server choices made on the command line."""

    served_model_names: tuple[str, ...]
    chat_template: str | None = None
    enable_auto_tool_choice: bool = False
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    max_n: int = MAX_N
    max_pending_requests: int | None = None
    """Most engine requests in flight before new ones get a 429 (default: 8 x max_num_seqs)."""
    extra_models: ServedModels = field(default_factory=ServedModels, compare=False)
    """Models plugins serve besides the base (LoRA adapters), filled while the server runs."""
    allowed_local_media_path: str | None = None
    """The directory ``file://`` image URLs may read under (None: ``file://`` is refused)."""
    image_fetch_timeout: float | None = None
    """Seconds for an ``http(s)://`` image (None: ``$VLLM_IMAGE_FETCH_TIMEOUT`` or 5)."""
    image_fetch_max_bytes: int | None = None
    """Largest image accepted (None: ``$VLLM_IMAGE_FETCH_MAX_BYTES`` or 20 MiB)."""
    allowed_media_domains: tuple[str, ...] | None = None
    """The only hosts ``http(s)://`` image URLs may name (None: any; then redirects are followed)."""


class ServingBase:
    """Checks and helpers used by the completion, chat and messages endpoints."""

    def __init__(self, engine: AsyncLLM, settings: ServerSettings) -> None:
        self.engine = engine
        self.settings = settings

    @property
    def model_name(self) -> str:
        return self.settings.served_model_names[0]

    def check_model(self, model: str | None) -> str:
        """The name to echo back; an unknown name is a 404 as in vLLM."""
        if not model:
            return self.model_name
        if model not in self.settings.served_model_names and model not in self.settings.extra_models:
            served = [*self.settings.served_model_names, *(m.name for m in self.settings.extra_models)]
            raise APIError(f"The model `{model}` does not exist; served: {', '.join(served)}", 404, "model")
        return model

    def request_args_for(self, model: str | None) -> dict[str, Any]:
        """The plugin request arguments of the requested model (an adapter's ``lora_request``)."""
        extra = self.settings.extra_models.get(model) if model else None
        return dict(extra.request_args) if extra is not None else {}

    def check_n(self, n: int, num_prompts: int = 1, best_of: int | None = None) -> None:
        """``n`` choices per prompt, drawn from ``best_of`` sequences when given (vLLM's rule)."""
        if n < 1:
            raise APIError(f"n must be >= 1, got {n}", 400, "n")
        if best_of is not None and best_of < n:
            raise APIError(f"best_of must be greater than or equal to n, got n={n} and best_of={best_of}", 400,
                           "best_of")
        per_prompt = best_of or n
        if per_prompt * num_prompts > self.settings.max_n:
            what = "best_of" if best_of is not None else "n"
            raise APIError(
                f"{what} * number of prompts = {per_prompt * num_prompts} exceeds this server's limit "
                f"{self.settings.max_n}", 400, what,
            )

    def check_capacity(self, num_new: int) -> None:
        """Back-pressure: refuse work (429) instead of queueing without bound."""
        limit = self.settings.max_pending_requests or 8 * self.engine.info.max_num_seqs
        in_flight = len(self.engine.streams)
        if in_flight + num_new > limit:
            raise APIError(
                f"the server is at capacity ({in_flight} requests in flight, limit {limit}); retry later", 429
            )

    @functools.cached_property
    def max_chars_per_token(self) -> int:
        """The longest token string of the vocabulary: no text longer than this many characters
        per allowed token can fit, whatever it tokenizes to."""
        tok = self.engine.tokenizer
        vocab = tok.get_vocab() if tok is not None else {}
        return max((len(t) for t in vocab), default=0) or 64

    def check_text_length(self, text: str, max_tokens: int | None, truncate: int | None) -> None:
        """Refuse a text prompt too long to fit before tokenizing it (vLLM's rule): tokenizing
        megabytes only to refuse them would hold the tokenizer thread for seconds."""
        if truncate is not None:
            return
        limit = self.engine.max_model_len - (max_tokens or 1)
        if limit > 0 and len(text) > limit * self.max_chars_per_token:
            raise APIError(
                f"This model's maximum context length is {self.engine.max_model_len} tokens. You passed "
                f"{len(text)} input characters and requested {max_tokens or 1} output tokens, which leaves "
                f"at most {limit} input tokens (at most {limit * self.max_chars_per_token} characters). "
                "Please reduce the length of the prompt.", 400, "prompt",
            )

    def truncate(self, ids: list[int], truncate: int | None) -> list[int]:
        """``truncate_prompt_tokens``: keep the prompt's last tokens (before the length check)."""
        try:
            return truncate_prompt(ids, truncate, self.engine.max_model_len)
        except RequestError as exc:
            raise APIError(str(exc), 400, "truncate_prompt_tokens") from None

    def check_length(self, num_prompt_tokens: int, max_tokens: int | None) -> None:
        """The prompt plus ``max_tokens`` must fit the model length (vLLM's message)."""
        limit = self.engine.max_model_len
        if max_tokens is not None and max_tokens > limit:
            raise APIError(f"max_tokens={max_tokens} cannot be greater than max_model_len={limit}. Please request "
                           f"fewer output tokens (this model's maximum context length is {limit} tokens).", 400,
                           "max_tokens")
        if num_prompt_tokens >= limit or (max_tokens is not None and num_prompt_tokens + max_tokens > limit):
            asked = "" if max_tokens is None else f" and {max_tokens} in the completion"
            raise APIError(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{num_prompt_tokens + (max_tokens or 0)} tokens ({num_prompt_tokens} in the prompt{asked}). "
                "Please reduce the length of the prompt or the completion.",
                400, "max_tokens" if num_prompt_tokens < limit else "prompt",
            )


async def merge(gens: Sequence[AsyncIterator[RequestOutput]]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Outputs of several generators as they come, tagged with the generator's index."""
    if len(gens) == 1:
        try:
            async for out in gens[0]:
                yield 0, out
        finally:
            await gens[0].aclose()  # type: ignore[attr-defined]  # abort when the consumer leaves early
        return
    q: asyncio.Queue[tuple[int, RequestOutput | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, gen: AsyncIterator[RequestOutput]) -> None:
        try:
            async for out in gen:
                await q.put((i, out))
            await q.put((i, None))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer
            await q.put((i, exc))

    tasks = [asyncio.ensure_future(pump(i, g)) for i, g in enumerate(gens)]
    try:
        remaining = len(tasks)
        while remaining:
            i, item = await q.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        for g in gens:
            await g.aclose()  # type: ignore[attr-defined]


def stop_holdback(stop: str | list[str] | None) -> int:
    """Characters a stream must hold back: a stop string may still complete and cut them off."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    return max((len(s) for s in stops), default=1) - 1


def text_delta(text: str, sent: int, finished: bool, holdback: int) -> tuple[str, int]:
    """The new text safe to send, and the new count of characters sent."""
    end = len(text) if finished else max(sent, len(text) - holdback)
    return text[sent:end], end


def sse(payload: BaseModel | dict[str, Any]) -> str:
    data = payload.model_dump_json(exclude_unset=False) if isinstance(payload, BaseModel) else json.dumps(payload)
    return f"data: {data}\n\n"


_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def compact_json(payload: Any) -> str:
    """JSON as pydantic's ``model_dump_json`` writes it: no spaces, non-ASCII kept."""
    text: str = _COMPACT.encode(payload)
    return text


def fast_sse(payload: dict[str, Any]) -> str:
    """``sse`` for a plain JSON-ready dict, byte for byte what pydantic's ``model_dump_json`` writes
    (compact, UTF-8) at about half its cost: a stream's per-token hot path."""
    return f"data: {_COMPACT.encode(payload)}\n\n"


SSE_DONE = "data: [DONE]\n\n"


async def guard_stream(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """An error after the response started becomes one error event, then ``[DONE]``."""
    try:
        async for ev in events:
            yield ev
    except Exception as exc:  # noqa: BLE001 - the status line is already sent
        yield sse_error(exc)
        yield SSE_DONE
