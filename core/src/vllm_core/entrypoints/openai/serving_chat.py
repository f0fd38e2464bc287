"""``POST /v1/chat/completions``: chat template, ``n`` samples, tool calls and reasoning.

Tool choice: ``none`` never parses calls; ``auto`` (needs ``--enable-auto-tool-choice`` and
``--tool-call-parser``) parses them with the server's tool parser; ``required`` and a named
function constrain the output with structured outputs (xgrammar) as vLLM does: the named
function's parameter schema, or a non-empty list of ``{name, parameters}``. Without xgrammar they
fall back to opening the call in the prompt (``{"name": "f", "arguments": {"first_property": ``)
and reading the model's JSON continuation; a model that does not continue with valid JSON then
gets its text back as content. Either way the request stops once the call's JSON is complete.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jinja2

from vllm_core.beam_search import beam_search_async
from vllm_core.engine.async_llm import AsyncLLM, run_to_completion
from vllm_core.entrypoints.openai.errors import APIError
from vllm_core.entrypoints.openai.logprobs import chat_logprobs, prompt_logprobs_json
from vllm_core.entrypoints.openai.protocol import (
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ChatStreamChoice,
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    FunctionCall,
    NamedToolChoice,
    ToolCall,
    UsageInfo,
    random_id,
)
from vllm_core.entrypoints.openai.serving_engine import (
    SSE_DONE,
    ServerSettings,
    ServingBase,
    sse,
    stop_holdback,
)
from vllm_core.errors import RequestError
from vllm_core.multimodal.content_parts import ChatImagePolicy, ParsedChat, parse_chat_content
from vllm_core.multimodal.inputs import MultiModalInputError
from vllm_core.multimodal.media import MediaConnector
from vllm_core.outputs import RequestOutput
from vllm_core.reasoning.abstract import ReasoningParser, ReasoningStreamer
from vllm_core.sampling_params import StructuredOutputsParams
from vllm_core.tokenizers.chat import apply_chat_template, processor_chat_template
from vllm_core.tool_parsers.abstract import ParsedToolCall, ToolCallDelta, ToolCallStreamer, ToolParser, make_call


def parse_messages(messages: list[dict[str, Any]], media: ChatImagePolicy | None = None,
                   labels: list[str] | None = None) -> ParsedChat:
    """OpenAI messages -> what chat templates expect, and their images: text parts joined (image
    parts become ``{"type": "image"}`` items, see ``vllm_core.multimodal.content_parts``), call
    arguments decoded. ``labels[i]`` names message ``i`` in errors."""
    parsed = media.parse(messages, labels) if media is not None else parse_chat_content(messages, None, labels)
    for m in parsed.messages:
        calls = m.get("tool_calls")
        if isinstance(calls, list):
            fixed = []
            for call in calls:
                call = dict(call) if isinstance(call, dict) else call
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                    fn = dict(fn)
                    try:
                        fn["arguments"] = json.loads(fn["arguments"])
                    except ValueError:
                        pass
                    call["function"] = fn
                fixed.append(call)
            m["tool_calls"] = fixed
    return parsed


def normalize_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``parse_messages`` for text-only uses (``/tokenize``): image parts are refused, since
    their token count depends on the model's image processor."""
    parsed = parse_messages(messages)
    if parsed.images:
        raise APIError(f"{parsed.image_parts}: image parts cannot be tokenized here; send text only", 400,
                       parsed.images[0].where)
    return parsed.messages


@dataclass
class ToolMode:
    """How this request's output is read for tool calls."""

    kind: str
    """``none``, ``auto``, ``named`` or ``required``."""
    name: str | None = None
    prefix: str = ""
    """Text appended to the prompt (the opening of a forced call, without structured outputs)."""
    tool_names: tuple[str, ...] = ()
    schema: dict[str, Any] | None = None
    """JSON schema the output is constrained to (structured outputs), for forced calls."""


def structured_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("xgrammar") is not None


def required_schema(tools: list[Any]) -> dict[str, Any]:
    """vLLM's schema for ``tool_choice="required"``: a non-empty list of ``{name, parameters}``."""
    return {"type": "array", "minItems": 1, "items": {"type": "object", "anyOf": [
        {"properties": {"name": {"type": "string", "enum": [t.function.name]},
                        "parameters": t.function.parameters or {"type": "object"}},
         "required": ["name", "parameters"]}
        for t in tools
    ]}}


def forced_prefix(name: str | None, parameters: dict[str, Any] | None) -> str:
    """The opening of a forced call: its name and, from the schema, the first argument's key."""
    if name is None:
        return '{"name": "'
    prefix = '{"name": ' + json.dumps(name) + ', "arguments": {'
    props = (parameters or {}).get("properties") or {}
    if not isinstance(props, dict) or not props:
        return prefix
    required = [k for k in (parameters or {}).get("required") or [] if k in props]
    key = required[0] if required else next(iter(props))
    quote = '"' if isinstance(props[key], dict) and props[key].get("type") == "string" else ""
    return prefix + json.dumps(key) + ": " + quote


def parse_forced(mode: ToolMode, text: str) -> list[ParsedToolCall] | None:
    """The calls of a ``named`` / ``required`` request, or None while (or if) its JSON is incomplete."""
    try:
        obj, _ = json.JSONDecoder().raw_decode((mode.prefix + text).lstrip())
        if mode.schema is not None and mode.kind == "named":
            assert mode.name is not None
            return [make_call(mode.name, obj)]
        items = obj if isinstance(obj, list) else [obj]
        calls = []
        for item in items:
            if not isinstance(item, dict) or item.get("name") not in mode.tool_names:
                return None
            if mode.name is not None and item["name"] != mode.name:
                return None
            calls.append(make_call(item["name"], item.get("arguments", item.get("parameters"))))
        return calls or None
    except (ValueError, AssertionError):
        return None


def response_format_constraint(fmt: dict[str, Any] | None) -> StructuredOutputsParams | None:
    """OpenAI's ``response_format`` as a structured-output constraint."""
    kind = (fmt or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return StructuredOutputsParams(json_object=True)
    if kind == "json_schema":
        schema = ((fmt or {}).get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise APIError("response_format.json_schema.schema must be a JSON schema object", 400, "response_format")
        return StructuredOutputsParams(json=schema)
    raise APIError(f"response_format.type {kind!r} is not one of text, json_object, json_schema", 400,
                   "response_format")


@dataclass
class ChoiceState:
    """Streaming state of one choice."""

    reasoning: ReasoningStreamer | None
    tools: ToolCallStreamer | None
    content_sent: int = 0
    tokens_sent: int = 0
    calls: list[ParsedToolCall] = field(default_factory=list)
    done: bool = False


class ServingChat(ServingBase):
    def __init__(self, engine: AsyncLLM, settings: ServerSettings) -> None:
        from vllm_core.plugins import registry

        super().__init__(engine, settings)
        tok = engine.tokenizer
        self.tool_parser_cls: type[ToolParser] | None = None
        self.reasoning_parser_cls: type[ReasoningParser] | None = None
        if settings.tool_call_parser:
            self.tool_parser_cls = registry.tool_parsers().get(settings.tool_call_parser)
        if settings.reasoning_parser:
            self.reasoning_parser_cls = registry.reasoning_parsers().get(settings.reasoning_parser)
        self.tokenizer = tok
        connector = MediaConnector.create(settings.allowed_local_media_path, settings.image_fetch_timeout,
                                          settings.image_fetch_max_bytes, settings.allowed_media_domains)
        self.media = ChatImagePolicy.for_engine(connector, engine.input_processor.multimodal, self.model_name)
        self.chat_template = settings.chat_template or processor_chat_template(engine.info.model_path)
        """``--chat-template``, else the model directory's processor template, else the tokenizer's (None)."""

    # ------------------------------------------------------------------------------ request
    def _tool_mode(self, req: ChatCompletionRequest) -> ToolMode:
        tools = req.tools or []
        names = tuple(t.function.name for t in tools)
        for t in tools:
            params = t.function.parameters
            if params is not None and params.get("type", "object") != "object":
                raise APIError(f"tool {t.function.name!r}: parameters must be a JSON schema of type object", 400,
                               "tools")
        choice = req.tool_choice
        if choice is not None and not tools and choice != "none":
            raise APIError("tool_choice needs tools", 400, "tool_choice")
        if not tools or choice == "none":
            return ToolMode("none")
        if isinstance(choice, NamedToolChoice):
            if choice.function.name not in names:
                raise APIError(f"tool_choice names {choice.function.name!r}, which is not in tools: {list(names)}",
                               400, "tool_choice")
            tool = next(t for t in tools if t.function.name == choice.function.name)
            if structured_available():
                return ToolMode("named", tool.function.name, "", names, tool.function.parameters or {"type": "object"})
            return ToolMode("named", tool.function.name, forced_prefix(tool.function.name, tool.function.parameters),
                            names)
        if choice == "required":
            if structured_available():
                return ToolMode("required", None, "", names, required_schema(tools))
            return ToolMode("required", None, forced_prefix(None, None), names)
        auto_ready = self.settings.enable_auto_tool_choice and self.tool_parser_cls is not None
        if choice == "auto" and not auto_ready:
            raise APIError('"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
                           400, "tool_choice")
        return ToolMode("auto" if auto_ready else "none", tool_names=names)

    def _prompt(self, req: ChatCompletionRequest, mode: ToolMode, parsed: ParsedChat | None = None,
                images: list[Any] | None = None) -> dict[str, Any]:
        """The templated, tokenized prompt; with ``images`` also their ``multi_modal_data``."""
        tok = self.tokenizer
        if tok is None:
            raise APIError("this model has no tokenizer, so it cannot chat; use /v1/completions with token ids", 400)
        kwargs = dict(req.chat_template_kwargs or {})
        add_gen = req.add_generation_prompt and not req.continue_final_message
        if req.continue_final_message:
            kwargs["continue_final_message"] = True
        tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools and mode.kind != "none" else None
        try:
            template = req.chat_template or self.chat_template
            messages = self.media.template_messages(parsed or parse_messages(req.messages, self.media),
                                                    template or getattr(tok, "chat_template", None))
            text = apply_chat_template(tok, messages, template, add_gen, tools, **kwargs)
        except jinja2.TemplateError as exc:
            raise APIError(f"the chat template failed on these messages: {exc}", 400, "messages") from exc
        except RequestError as exc:
            raise APIError(str(exc), 400, "messages") from exc
        text += mode.prefix
        self.check_text_length(text, req.max_completion_tokens or req.max_tokens, req.truncate_prompt_tokens)
        ids = self.truncate(tok.encode(text, add_special_tokens=False), req.truncate_prompt_tokens)
        prompt: dict[str, Any] = {"prompt": text, "prompt_token_ids": ids}
        if images:
            if req.truncate_prompt_tokens is not None:
                raise APIError("truncate_prompt_tokens cannot be combined with image parts (it could cut an "
                               "image's placeholder tokens)", 400, "truncate_prompt_tokens")
            prompt["multi_modal_data"] = {"image": images}
        if req.cache_salt is not None:
            prompt["cache_salt"] = req.cache_salt
        return prompt

    async def submit(self, req: ChatCompletionRequest, rid: str,
                     labels: list[str] | None = None) -> tuple[ToolMode, AsyncIterator[RequestOutput]]:
        """Validate, load the images, template and tokenize (off the event loop), and queue the
        request. ``labels[i]`` names message ``i`` in errors (``/v1/messages`` passes the client's)."""
        self.check_model(req.model)
        self.check_n(req.n)
        self.check_capacity(req.n if req.use_beam_search else 1)  # a beam search runs n requests at once
        if req.top_logprobs is not None and not req.logprobs:
            raise APIError("top_logprobs needs logprobs: true", 400, "top_logprobs")
        mode = self._tool_mode(req)
        parsed = parse_messages(req.messages, self.media, labels)
        if parsed.images and req.use_beam_search:
            raise APIError(f"{parsed.image_parts}: use_beam_search cannot be combined with image parts", 400,
                           "use_beam_search")
        images = await self.media.load_async(parsed) if parsed.images else []
        prompt = await self.engine.run_in_tokenizer_thread(self._prompt, req, mode, parsed, images)
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        self.check_length(len(prompt["prompt_token_ids"]), max_tokens)
        extra: dict[str, Any] = {"logprobs": req.top_logprobs or 0} if req.logprobs else {}
        if req.prompt_logprobs is not None:
            if req.use_beam_search:
                raise APIError("use_beam_search cannot return prompt_logprobs", 400, "prompt_logprobs")
            extra["prompt_logprobs"] = req.prompt_logprobs
        constraint = response_format_constraint(req.response_format)
        if mode.schema is not None:
            if constraint is not None:
                raise APIError("response_format cannot be combined with a forced tool_choice", 400, "response_format")
            constraint = StructuredOutputsParams(json=mode.schema)
        if constraint is not None:
            extra["structured_outputs"] = constraint
        special = (self.tool_parser_cls is not None and self.tool_parser_cls.needs_special_tokens and mode.kind == "auto") or (
            self.reasoning_parser_cls is not None and self.reasoning_parser_cls.needs_special_tokens)
        if special:
            req = req.model_copy(update={"skip_special_tokens": False})
        if req.use_beam_search:
            return mode, self._beam_search(req, prompt, rid, max_tokens, constraint)
        params = req.sampling_params(max_tokens, None, **extra)
        try:
            return mode, await self.engine.submit_async(prompt, params, rid, **self.request_args_for(req.model))
        except MultiModalInputError as exc:  # the engine's check (placeholders, item kinds): name the parts
            if not parsed.images:
                raise
            raise APIError(f"{parsed.image_parts}: {exc}", 400, parsed.images[0].where) from None

    def _beam_search(self, req: ChatCompletionRequest, prompt: dict[str, Any], rid: str, max_tokens: int | None,
                     constraint: StructuredOutputsParams | None) -> AsyncIterator[RequestOutput]:
        """``use_beam_search``: ``n`` beams, all returned best first (vLLM's chat semantics)."""
        if constraint is not None:
            raise APIError("use_beam_search cannot be combined with response_format or a forced tool_choice", 400,
                           "use_beam_search")
        if req.logprobs and (req.top_logprobs or 0) > 2 * req.n:
            raise APIError(f"with use_beam_search, top_logprobs can be at most 2 * n = {2 * req.n} (the candidates "
                           f"each step scores), got {req.top_logprobs}", 400, "top_logprobs")
        if max_tokens is None:
            max_tokens = self.engine.max_model_len - len(prompt["prompt_token_ids"])
        params = req.beam_search_params(max_tokens, req.n)
        return beam_search_async(self.engine, prompt, params, rid, req.n, req.skip_special_tokens,
                                 req.include_stop_str_in_output, self.request_args_for(req.model))

    async def create(self, req: ChatCompletionRequest) -> ChatCompletionResponse | AsyncIterator[str]:
        rid = req.request_id or random_id("chatcmpl")
        mode, gen = await self.submit(req, rid)
        model = req.model or self.model_name
        if req.stream:
            return self._stream(req, rid, model, mode, gen)
        out = await self.collect(gen, mode)
        choices = [self._choice(c.index, c.text, c.finish_reason, c.stop_reason, mode,
                                self._logprobs(req, c.token_ids, c.logprobs)) for c in out.outputs]
        if req.return_token_ids:
            for choice, c in zip(choices, out.outputs):
                choice.token_ids = list(c.token_ids)
        plp = prompt_logprobs_json(out.prompt_logprobs) if req.prompt_logprobs is not None else None
        return ChatCompletionResponse(id=rid, model=model, choices=choices, usage=_usage(out), prompt_logprobs=plp,
                                      prompt_token_ids=list(out.prompt_token_ids) if req.return_token_ids else None)

    # --------------------------------------------------------------------------- non-stream
    @staticmethod
    async def collect(gen: AsyncIterator[RequestOutput], mode: ToolMode) -> RequestOutput:
        """The final output; a forced call ends its sample as soon as the call's JSON is complete."""
        if mode.kind not in ("named", "required"):
            (out,) = await run_to_completion([gen])
            return out
        last: RequestOutput | None = None
        try:
            async for out in gen:
                last = out
                if all(c.finish_reason is not None or parse_forced(mode, c.text) for c in out.outputs):
                    break
        finally:
            await gen.aclose()  # type: ignore[attr-defined]
        assert last is not None
        for c in last.outputs:
            if c.finish_reason is None:
                c.finish_reason = "stop"
        return last

    def _logprobs(self, req: ChatCompletionRequest, token_ids: list[int], logprobs: Any) -> Any:
        if not req.logprobs or logprobs is None:
            return None
        return chat_logprobs(token_ids, logprobs, self.tokenizer, req.top_logprobs or 0)

    def _choice(self, index: int, text: str, finish: str | None, stop: Any, mode: ToolMode,
                logprobs: Any = None) -> ChatChoice:
        reasoning = None
        if self.reasoning_parser_cls is not None:
            reasoning, rest = self.reasoning_parser_cls(self.tokenizer).extract_reasoning(text)
            text = rest or ""
        content: str | None = text if self.reasoning_parser_cls is None else (text or None)
        calls: list[ParsedToolCall] = []
        if mode.kind == "auto":
            assert self.tool_parser_cls is not None
            ext = self.tool_parser_cls(self.tokenizer).extract_tool_calls(text)
            content, calls = ext.content, ext.tool_calls
        elif mode.kind in ("named", "required"):
            forced = parse_forced(mode, text)
            if forced is not None:
                content, calls = None, forced
        message = ChatMessage(
            content=content, reasoning_content=reasoning,
            tool_calls=[ToolCall(function=FunctionCall(name=c.name, arguments=c.arguments)) for c in calls],
        )
        if calls and finish == "stop":
            finish = "tool_calls"
        return ChatChoice(index=index, message=message, logprobs=logprobs, finish_reason=finish, stop_reason=stop)

    # ------------------------------------------------------------------------------- stream
    async def _stream(self, req: ChatCompletionRequest, rid: str, model: str, mode: ToolMode,
                      gen: AsyncIterator[RequestOutput]) -> AsyncIterator[str]:
        include_usage = req.stream_options is not None and req.stream_options.include_usage
        async for chunk in self.chunks(req, rid, model, mode, gen):
            if chunk.choices or include_usage:
                yield sse(chunk)
        yield SSE_DONE

    async def chunks(self, req: ChatCompletionRequest, rid: str, model: str, mode: ToolMode,
                     gen: AsyncIterator[RequestOutput]) -> AsyncIterator[ChatCompletionChunk]:
        """The stream as chunk objects; the last one has no choices and carries the usage."""
        created = int(time.time())
        holdback = stop_holdback(req.stop)
        states: dict[int, ChoiceState] = {}
        stream = self.engine.streams.get(rid)
        prompt_ids = list(stream.prompt_token_ids or []) if stream is not None else []
        continuous = req.stream_options is not None and req.stream_options.include_usage and \
            req.stream_options.continuous_usage_stats
        generated = 0

        def chunk(choice: ChatStreamChoice, first: bool = False) -> ChatCompletionChunk:
            usage = None
            if continuous:
                usage = UsageInfo(prompt_tokens=len(prompt_ids), completion_tokens=generated,
                                  total_tokens=len(prompt_ids) + generated)
            return ChatCompletionChunk(id=rid, created=created, model=model, choices=[choice], usage=usage,
                                       prompt_token_ids=prompt_ids if first and req.return_token_ids else None)

        for i in range(req.n):
            states[i] = ChoiceState(
                ReasoningStreamer(self.reasoning_parser_cls(self.tokenizer)) if self.reasoning_parser_cls else None,
                ToolCallStreamer(self.tool_parser_cls(self.tokenizer)) if mode.kind == "auto" and self.tool_parser_cls else None,
            )
            yield chunk(ChatStreamChoice(index=i, delta=DeltaMessage(role="assistant", content="")), first=i == 0)
        last: RequestOutput | None = None
        try:
            async for out in gen:
                last = out
                generated = sum(len(c.token_ids) for c in out.outputs)
                for c in out.outputs:
                    st = states[c.index]
                    if st.done:
                        continue
                    finished = c.finish_reason is not None
                    visible = c.text if finished else c.text[: max(0, len(c.text) - holdback)]
                    delta = self._delta(st, visible, finished, mode)
                    lps = None
                    new_ids: list[int] | None = None
                    if delta is not None or finished:
                        lps = self._logprobs(req, c.token_ids[st.tokens_sent:],
                                             c.logprobs[st.tokens_sent:] if c.logprobs else None)
                        new_ids = list(c.token_ids[st.tokens_sent:]) if req.return_token_ids else None
                        st.tokens_sent = len(c.token_ids)
                    if finished or (mode.kind in ("named", "required") and st.calls):
                        st.done = True
                        finish = "tool_calls" if st.calls and c.finish_reason in ("stop", None) else c.finish_reason
                        *first, end = one_call_per_delta(delta or DeltaMessage())
                        for part in first:
                            yield chunk(ChatStreamChoice(index=c.index, delta=part))
                        yield chunk(ChatStreamChoice(index=c.index, delta=end, logprobs=lps, finish_reason=finish,
                                                     stop_reason=c.stop_reason, token_ids=new_ids))
                    elif delta is not None:
                        *first, end = one_call_per_delta(delta)
                        for part in first:
                            yield chunk(ChatStreamChoice(index=c.index, delta=part))
                        yield chunk(ChatStreamChoice(index=c.index, delta=end, logprobs=lps, token_ids=new_ids))
                if all(st.done for st in states.values()):
                    break  # a forced call is complete: leaving the loop aborts the rest
        finally:
            await gen.aclose()  # type: ignore[attr-defined]
        if last is not None:
            yield ChatCompletionChunk(id=rid, created=created, model=model, choices=[], usage=_usage(last))

    def _delta(self, st: ChoiceState, text: str, finished: bool, mode: ToolMode) -> DeltaMessage | None:
        reasoning = ""
        if st.reasoning is not None:
            reasoning, text = st.reasoning.feed(text, finished)
        content = ""
        call_deltas: list[ToolCallDelta] = []
        if st.tools is not None:
            content, call_deltas = st.tools.feed(text)
            if finished:
                more, extra = st.tools.finish(text)
                content, call_deltas = content + more, call_deltas + extra
            st.calls.extend(ParsedToolCall(d.name, "") for d in call_deltas if d.name is not None)
        elif mode.kind in ("named", "required"):
            if not st.calls:
                forced = parse_forced(mode, text)
                if forced is not None:
                    call_deltas = [ToolCallDelta(k, c.name, c.arguments) for k, c in enumerate(forced)]
                    st.calls.extend(forced)
                elif finished:
                    content = text
        else:
            content = text[st.content_sent:]
            st.content_sent = len(text)
        if not (reasoning or content or call_deltas):
            return None
        deltas = [
            DeltaToolCall(index=d.index, id=random_id("chatcmpl-tool"), type="function",
                          function=DeltaFunctionCall(name=d.name, arguments=d.arguments))
            if d.name is not None else
            DeltaToolCall(index=d.index, function=DeltaFunctionCall(arguments=d.arguments))
            for d in call_deltas
        ]
        return DeltaMessage(content=content or None, reasoning_content=reasoning or None, tool_calls=deltas)


def one_call_per_delta(delta: DeltaMessage) -> list[DeltaMessage]:
    """``delta`` split so no chunk carries pieces of two tool calls (as vLLM streams parallel calls):
    the text and the first call's pieces, then one delta per further call."""
    indices = list(dict.fromkeys(tc.index for tc in delta.tool_calls))
    if len(indices) <= 1:
        return [delta]
    first = delta.model_copy(update={"tool_calls": [tc for tc in delta.tool_calls if tc.index == indices[0]]})
    rest = [DeltaMessage(tool_calls=[tc for tc in delta.tool_calls if tc.index == i]) for i in indices[1:]]
    return [first, *rest]


def _usage(out: RequestOutput) -> UsageInfo:
    prompt = len(out.prompt_token_ids)
    completion = sum(len(c.token_ids) for c in out.outputs)
    return UsageInfo(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
