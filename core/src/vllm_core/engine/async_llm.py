"""``AsyncLLM``: the asyncio engine behind the server; the engine core runs in its own process.

The front end tokenizes, validates and detokenizes; the core process only schedules and runs the
model. Tokenizing and chat templating run on one worker thread (``run_in_tokenizer_thread``,
``add_request_async``), never in the event loop, so a multi-megabyte prompt does not stall every
other client (one thread, as in vLLM: Hugging Face tokenizers are not safe to share across
threads that change their settings). Each request gets a ``RequestStream``; its output is built when
the consumer reads it, so a slow consumer simply sees the newest state, or one merged delta (no
unbounded per-request queues, no per-step output objects nobody reads). Leaving the
``generate`` iterator early (a client disconnect) aborts the request, which frees its KV blocks
in the core before its next step.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from vllm_core.config import EngineConfig
from vllm_core.engine.core_client import CoreClient, EngineDeadError, EngineInfo, EngineStats
from vllm_core.engine.core_types import EngineCoreOutput, EngineCoreRequest
from vllm_core.engine.input_processor import InputProcessor, PromptType
from vllm_core.engine.output_processor import OutputProcessor, RequestState, fan_out
from vllm_core.errors import RequestError
from vllm_core.multimodal.processing import MultiModalPromptProcessor
from vllm_core.outputs import RequestOutput
from vllm_core.plugins.arguments import FrontendContext, RequestArguments
from vllm_core.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class FinishedRequestStats:
    """Timings and sizes of one finished (or aborted) request, for the metrics."""

    finish_reason: str | None
    num_prompt_tokens: int
    num_generation_tokens: int
    e2e_latency: float
    ttft: float | None
    """Time to first token (None when aborted before it)."""
    tpot: float | None
    """Mean time per output token after the first (None with fewer than two tokens)."""
    queue_time: float | None = None
    """Arrival to first scheduled in the core (None when never scheduled)."""
    prefill_time: float | None = None
    """First scheduled to first token."""
    decode_time: float | None = None
    """First token to last token."""
    inference_time: float | None = None
    """First scheduled to last token."""
    inter_token_latencies: tuple[float, ...] = ()
    """Seconds between consecutive token arrivals (per token when several came at once)."""


class RequestStream:
    """One request's output state, and an event set whenever it changes.

    The output is built when the consumer wakes (``take``), not on every engine step: a consumer
    that falls behind (a busy event loop, a slow client) builds one output for several steps,
    cumulative or a merged DELTA, so the per-step work in the event loop is only appending tokens.
    """

    def __init__(self, request_id: str, num_prompt_tokens: int, prompt_token_ids: list[int] | None,
                 state: RequestState) -> None:
        self.request_id = request_id
        self.num_prompt_tokens = num_prompt_tokens
        self.prompt_token_ids = prompt_token_ids
        """The prompt as the engine runs it (after truncation), for a response that returns it."""
        self.state = state
        """The output processor's state of the request (outputs are built from it)."""
        self.pending: set[int] = set()
        """Samples changed since the consumer last took an output."""
        self.final: RequestOutput | None = None
        """The last output, built when the request finished, until the consumer takes it."""
        self.latest: RequestOutput | None = None
        """The newest output taken (or the final one)."""
        self.error: BaseException | None = None
        self.changed = asyncio.Event()
        self.arrival = time.monotonic()
        self.first_token: float | None = None
        self.last_token: float | None = None
        self.scheduled: float | None = None
        self.num_tokens = 0
        self.itl: list[float] = []
        self.done = False

    def notify(self, indices: set[int], num_tokens: int, final: RequestOutput | None = None) -> None:
        """Samples ``indices`` changed (``num_tokens`` generated in all); ``final``: the request
        finished with this output."""
        if num_tokens > self.num_tokens:
            now = time.monotonic()
            if self.first_token is None:
                self.first_token = now
            elif self.last_token is not None:
                gap = (now - self.last_token) / (num_tokens - self.num_tokens)
                self.itl.extend([gap] * (num_tokens - self.num_tokens))
            self.last_token, self.num_tokens = now, num_tokens
        if final is not None:
            self.final = self.latest = final
            self.pending.clear()
            self.done = True
        else:
            self.pending |= indices
        self.changed.set()

    def take(self) -> RequestOutput | None:
        """The output to hand to the consumer now (None: nothing new)."""
        if self.final is not None:
            out, self.final = self.final, None
            return out
        if not self.pending:
            return None
        out = self.state.output(self.pending)
        self.pending = set()
        self.latest = out
        return out

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done = True
        self.changed.set()

    def stats(self, finish_reason: str | None) -> FinishedRequestStats:
        now = time.monotonic()
        ntok, longest = self.state.num_output_tokens, self.state.longest_output
        ttft = None if self.first_token is None else self.first_token - self.arrival
        tpot = None
        if self.first_token is not None and longest > 1:
            tpot = (now - self.first_token) / (longest - 1)
        sched, first, last = self.scheduled, self.first_token, self.last_token
        return FinishedRequestStats(
            finish_reason, self.num_prompt_tokens, ntok, now - self.arrival, ttft, tpot,
            queue_time=None if sched is None else max(0.0, sched - self.arrival),
            prefill_time=None if sched is None or first is None else max(0.0, first - sched),
            decode_time=None if first is None or last is None else last - first,
            inference_time=None if sched is None or last is None else max(0.0, last - sched),
            inter_token_latencies=tuple(self.itl),
        )


class AsyncLLM:
    """Create with ``await AsyncLLM.create(config)``; ``generate`` streams ``RequestOutput``s."""

    def __init__(self, client: CoreClient, info: EngineInfo, config: EngineConfig) -> None:
        self.client = client
        self.info = info
        self.config = config
        self.tokenizer = info.tokenizer
        self.max_model_len = info.max_model_len
        self.input_processor = InputProcessor(
            self.tokenizer, info.max_model_len, info.vocab_size, info.eos_token_id, config.model.max_logprobs,
            RequestArguments.create(FrontendContext(config, info.hf_config, info.tokenizer)),
            MultiModalPromptProcessor.create(config.model, info.hf_config, info.tokenizer, info.model_path, info.block_size),
        )
        self.output_processor = OutputProcessor(self.tokenizer)
        self.streams: dict[str, RequestStream] = {}
        self.stat_loggers: list[Callable[[FinishedRequestStats], None]] = []
        self.iteration_loggers: list[Callable[[list[int]], None]] = []
        """Called with the tokens scheduled in each engine step (as they arrive, batched)."""
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tokenizer_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vllm-core-tokenizer")

    @classmethod
    async def create(cls, config: EngineConfig, start_timeout: float | None = None) -> AsyncLLM:
        """Start the core process and wait (off the event loop) until the model is loaded."""
        loop = asyncio.get_running_loop()
        holder: list[AsyncLLM] = []

        def on_message(msg: tuple[Any, ...]) -> None:
            try:
                loop.call_soon_threadsafe(holder[0]._on_message, msg)
            except RuntimeError:  # the loop is closed: nobody is left to tell
                pass

        client = CoreClient(config, lambda msg: on_message(msg) if holder else None)
        info = await asyncio.to_thread(client.start, start_timeout)
        engine = cls(client, info, config)
        engine._loop = loop
        holder.append(engine)
        return engine

    # ------------------------------------------------------------------------------ requests
    @property
    def is_running(self) -> bool:
        return self.client.is_alive

    @property
    def dead_reason(self) -> str | None:
        return self.client.dead_reason

    def next_request_id(self) -> str:
        return f"req-{next(self._ids)}"

    def check_alive(self) -> None:
        if not self.client.is_alive:
            raise EngineDeadError(self.client.dead_reason or "the engine-core process is not running")

    async def run_in_tokenizer_thread(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on the tokenizer thread (tokenizing, chat templates): the event
        loop keeps serving meanwhile."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._tokenizer_thread, functools.partial(fn, *args, **kwargs))

    def _check_new(self, request_id: str) -> None:
        self.check_alive()
        if request_id in self.streams:
            raise RequestError(f"request id {request_id!r} is already in use")

    def add_request(
        self, request_id: str, prompt: PromptType, params: SamplingParams,
        request_args: Mapping[str, Any] | None = None,
    ) -> RequestStream:
        """Validate and send one request to the core; a bad request raises ``RequestError``.
        ``request_args``: plugin keyword arguments (``{"lora_request": LoRARequest(...)}``)."""
        self._check_new(request_id)
        return self._register(request_id, *self.input_processor.process(request_id, prompt, params, request_args))

    async def add_request_async(
        self, request_id: str, prompt: PromptType, params: SamplingParams,
        request_args: Mapping[str, Any] | None = None,
    ) -> RequestStream:
        """``add_request`` with the input processing (tokenizing a text prompt, bad words, id
        checks, plugin request arguments) on the tokenizer thread."""
        self._check_new(request_id)
        if _cheap_to_process(prompt, params) and not any(v is not None for v in (request_args or {}).values()):
            return self._register(request_id, *self.input_processor.process(request_id, prompt, params, request_args))
        processed = await self.run_in_tokenizer_thread(
            self.input_processor.process, request_id, prompt, params, request_args)
        self._check_new(request_id)
        return self._register(request_id, *processed)

    def _register(self, request_id: str, text: str | None, core_req: EngineCoreRequest) -> RequestStream:
        params = core_req.sampling_params
        children = fan_out(request_id, params)
        self.output_processor.add_request(request_id, text, core_req.prompt_token_ids, children, params)
        stream = RequestStream(request_id, len(core_req.prompt_token_ids), core_req.prompt_token_ids,
                               self.output_processor.requests[request_id])
        self.streams[request_id] = stream
        try:
            for child_id, child_params in children:
                self.client.add_request(replace(core_req, request_id=child_id, sampling_params=child_params))
        except BaseException:
            # The core died under us (EngineDeadError): leave nothing behind that waits for it.
            self.streams.pop(request_id, None)
            self.client.abort_requests(self.output_processor.abort_request(request_id))
            raise
        return stream

    def submit(
        self, prompt: PromptType, params: SamplingParams, request_id: str | None = None,
        lora_request: Any = None, **request_args: Any,
    ) -> AsyncIterator[RequestOutput]:
        """Validate and queue a request now (a bad one raises ``RequestError`` here), and return
        the iterator of its outputs (see ``generate``). ``lora_request`` and any other keyword
        go to the plugins' request arguments."""
        rid = request_id or self.next_request_id()
        args = {"lora_request": lora_request, **request_args}
        return self._outputs(rid, self.add_request(rid, prompt, params, args))

    async def submit_async(
        self, prompt: PromptType, params: SamplingParams, request_id: str | None = None,
        lora_request: Any = None, **request_args: Any,
    ) -> AsyncIterator[RequestOutput]:
        """``submit`` with the input processing off the event loop (see ``add_request_async``)."""
        rid = request_id or self.next_request_id()
        args = {"lora_request": lora_request, **request_args}
        return self._outputs(rid, await self.add_request_async(rid, prompt, params, args))

    async def generate(
        self, prompt: PromptType, params: SamplingParams, request_id: str | None = None,
        lora_request: Any = None, **request_args: Any,
    ) -> AsyncIterator[RequestOutput]:
        """Yield the request's cumulative output each time it changes, the last one finished.

        Closing the iterator early (or cancelling its task) aborts the request.
        """
        outputs = self.submit(prompt, params, request_id, lora_request, **request_args)
        try:
            async for out in outputs:
                yield out
        finally:
            await outputs.aclose()  # type: ignore[attr-defined]

    async def _outputs(self, rid: str, stream: RequestStream) -> AsyncIterator[RequestOutput]:
        try:
            while True:
                await stream.changed.wait()
                stream.changed.clear()
                if stream.error is not None:
                    raise stream.error
                out = stream.take()
                if out is not None:
                    yield out
                if stream.done and stream.final is None:
                    return
        finally:
            if not stream.done:
                self.abort(rid)

    def abort(self, request_id: str) -> None:
        """Stop a request now; its KV blocks are freed before the core's next step."""
        stream = self.streams.pop(request_id, None)
        core_ids = self.output_processor.abort_request(request_id)
        self.client.abort_requests(core_ids)
        if stream is not None and not stream.done:
            stream.done = True
            self._log(stream.stats("abort"))

    async def get_stats(self) -> EngineStats:
        """The core's scheduler and KV-cache counters, after every message sent before."""
        self.check_alive()
        assert self._loop is not None
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._calls[self.client.call("stats")] = fut
        value = await fut
        if isinstance(value, BaseException):
            raise value
        stats: EngineStats = value
        return stats

    # ------------------------------------------------------------------------ from the core
    def _on_message(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "outputs":
            self._on_outputs(msg[1])
            if len(msg) > 2 and msg[2]:
                for log_steps in self.iteration_loggers:
                    try:
                        log_steps(msg[2])
                    except Exception:  # noqa: BLE001 - a metrics bug must not break serving
                        logger.exception("iteration logger failed")
        elif kind == "result":
            fut = self._calls.pop(msg[1], None)
            if fut is not None and not fut.done():
                fut.set_result(msg[2])
        elif kind == "dead":
            logger.error("%s", msg[1])
            err = EngineDeadError(self.client.dead_reason or str(msg[1]))
            for stream in self.streams.values():
                stream.fail(err)
            self.streams.clear()
            for fut in self._calls.values():
                if not fut.done():
                    fut.set_exception(err)
            self._calls.clear()

    def _on_outputs(self, outputs: list[EngineCoreOutput]) -> None:
        for core_out in outputs:
            if core_out.scheduled_time is not None:
                parent = self.output_processor.parent_of.get(core_out.request_id, core_out.request_id)
                stream = self.streams.get(parent)
                if stream is not None and (stream.scheduled is None or core_out.scheduled_time < stream.scheduled):
                    stream.scheduled = core_out.scheduled_time
        shown, to_abort = self.output_processor.apply(outputs)
        if to_abort:
            self.client.abort_requests(to_abort)
        for state, indices in shown:
            stream = self.streams.get(state.request_id)
            if stream is None:
                continue
            if not state.finished:
                stream.notify(indices, state.num_output_tokens)
                continue
            out = state.output(indices | stream.pending)
            stream.notify(indices, state.num_output_tokens, out)
            del self.streams[state.request_id]
            reasons = [c.finish_reason for c in out.outputs]
            self._log(stream.stats(reasons[0] if reasons else None))

    def _log(self, stats: FinishedRequestStats) -> None:
        for log in self.stat_loggers:
            try:
                log(stats)
            except Exception:  # noqa: BLE001 - a metrics bug must not break serving
                logger.exception("stat logger failed")

    # ------------------------------------------------------------------------------ lifetime
    async def shutdown(self) -> None:
        for rid in list(self.streams):
            stream = self.streams.get(rid)
            self.abort(rid)
            if stream is not None:
                stream.fail(EngineDeadError("the server is shutting down"))
        self._tokenizer_thread.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.client.shutdown)


INLINE_PROMPT_TOKENS = 16384
"""A token-id prompt up to this long is checked in the event loop: a thread hop would cost more."""


def _cheap_to_process(prompt: PromptType, params: SamplingParams) -> bool:
    """Nothing to tokenize: token ids already, no bad words, no grammar to check."""
    return (isinstance(prompt, dict) and isinstance(prompt.get("prompt_token_ids"), list)
            and len(prompt["prompt_token_ids"]) <= INLINE_PROMPT_TOKENS and not params.bad_words
            and params.structured_outputs is None)


async def run_to_completion(gens: Sequence[AsyncIterator[RequestOutput]]) -> list[RequestOutput]:
    """The final output of each generator, run concurrently; any failure cancels (aborts) the rest."""

    async def last(gen: AsyncIterator[RequestOutput]) -> RequestOutput:
        out: RequestOutput | None = None
        async for o in gen:
            out = o
        assert out is not None
        return out

    tasks = [asyncio.ensure_future(last(g)) for g in gens]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for t in tasks:
            t.cancel()
