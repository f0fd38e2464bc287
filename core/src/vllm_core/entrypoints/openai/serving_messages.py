"""``POST /v1/messages``: Anthropic's Messages API on top of the chat endpoint.

A Messages request is translated into a chat request (system prompt, text / tool_use /
tool_result blocks, tools, tool_choice), run through ``ServingChat``, and the result translated
back: content blocks, ``stop_reason``, ``usage``, and for streams Anthropic's event sequence
(``message_start``, ``content_block_*``, ``message_delta``, ``message_stop``).
``/v1/messages/count_tokens`` counts the templated prompt's tokens; errors on these routes have
Anthropic's shape (``{"type": "error", "error": {"type", "message"}}``, see ``errors.error_for``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Union

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from vllm_core.engine.async_llm import AsyncLLM, run_to_completion
from vllm_core.entrypoints.openai.errors import APIError, anthropic_error_body, to_api_error
from vllm_core.entrypoints.openai.protocol import ChatCompletionRequest, random_id
from vllm_core.entrypoints.openai.serving_chat import ServingChat, parse_messages
from vllm_core.entrypoints.openai.serving_engine import ServerSettings

_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "abort": "end_turn"}


class AnthropicTool(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class MessagesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", protected_namespaces=())
    model: str | None = None
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    system: Union[str, list[dict[str, Any]], None] = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stream: bool = False
    tools: list[AnthropicTool] | None = None
    tool_choice: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


class CountTokensRequest(MessagesRequest):
    """``/v1/messages/count_tokens``: a Messages request without ``max_tokens``."""

    max_tokens: int = Field(1, ge=1)


def _text_of(blocks: Any) -> str:
    if isinstance(blocks, str):
        return blocks
    return "".join(b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text")


def to_chat_request(req: MessagesRequest) -> tuple[ChatCompletionRequest, list[str]]:
    """The chat request, and per chat message the name of the Messages-API item it came from
    (``system``, ``messages[i]``), so errors about a content part name the client's part."""
    messages: list[dict[str, Any]] = []
    labels: list[str] = []
    if req.system:
        messages.append({"role": "system", "content": _text_of(req.system)})
        labels.append("system")
    for i, m in enumerate(req.messages):
        role, content = m.get("role"), m.get("content")
        if role not in ("user", "assistant"):
            raise APIError(f"messages[{i}].role must be 'user' or 'assistant', got {role!r}", 400, f"messages[{i}].role")
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
            labels.append(f"messages[{i}]")
            continue
        if not isinstance(content, list):
            raise APIError(f"messages[{i}].content must be a string or a list of blocks", 400, f"messages[{i}].content")
        text, calls = [], []
        parts: list[dict[str, Any]] = []  # text and image blocks, in order
        for block in content:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind in ("text", "image"):
                parts.append(block)
                if kind == "text":
                    text.append(block.get("text", ""))
            elif kind == "tool_use":
                calls.append({"id": block.get("id"), "type": "function",
                              "function": {"name": block.get("name"), "arguments": json.dumps(block.get("input", {}))}})
            elif kind == "tool_result":
                messages.append({"role": "tool", "tool_call_id": block.get("tool_use_id"),
                                 "content": _text_of(block.get("content", ""))})
                labels.append(f"messages[{i}]")
            else:
                raise APIError(f"messages[{i}]: content block type {kind!r} is not supported", 400,
                               f"messages[{i}].content")
        has_image = any(b["type"] == "image" for b in parts)
        if text or calls or has_image:
            # with images, the text and image blocks stay a content list for the template; errors
            # name them messages[i].content[j], j counting the text and image blocks
            msg: dict[str, Any] = {"role": role, "content": parts if has_image else "".join(text)}
            if calls:
                msg["tool_calls"] = calls
            messages.append(msg)
            labels.append(f"messages[{i}]")
    chat: dict[str, Any] = {
        "model": req.model, "messages": messages, "max_tokens": req.max_tokens, "stop": req.stop_sequences,
        "temperature": req.temperature, "top_p": req.top_p, "top_k": req.top_k, "stream": req.stream,
    }
    if req.tools:
        chat["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                           "parameters": t.input_schema}} for t in req.tools]
    choice = req.tool_choice or {}
    kind = choice.get("type")
    if kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "tool":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif kind in ("auto", "none"):
        chat["tool_choice"] = kind
    elif kind is not None:
        raise APIError(f"tool_choice.type {kind!r} is not one of auto, any, tool, none", 400, "tool_choice")
    return ChatCompletionRequest.model_validate(chat), labels


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"


class ServingMessages:
    def __init__(self, engine: AsyncLLM, settings: ServerSettings) -> None:
        self.chat = ServingChat(engine, settings)

    async def create(self, req: MessagesRequest) -> dict[str, Any] | AsyncIterator[str]:
        chat_req, labels = to_chat_request(req)
        rid = random_id("msg")
        mode, gen = await self.chat.submit(chat_req, rid, labels)
        model = req.model or self.chat.model_name
        if req.stream:
            stream = self.chat.engine.streams.get(rid)
            return self._stream(chat_req, rid, model, mode, gen, stream.num_prompt_tokens if stream else 0)
        (out,) = await run_to_completion([gen])
        c = out.outputs[0]
        choice = self.chat._choice(0, c.text, c.finish_reason, c.stop_reason, mode)
        content: list[dict[str, Any]] = []
        if choice.message.content:
            content.append({"type": "text", "text": choice.message.content})
        for call in choice.message.tool_calls:
            content.append({"type": "tool_use", "id": call.id, "name": call.function.name,
                            "input": json.loads(call.function.arguments)})
        stop_reason = _STOP.get(choice.finish_reason or "stop", "end_turn")
        stop_seq = c.stop_reason if isinstance(c.stop_reason, str) else None
        if stop_seq is not None:
            stop_reason = "stop_sequence"
        return {
            "id": rid, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": stop_reason, "stop_sequence": stop_seq,
            "usage": {"input_tokens": len(out.prompt_token_ids), "output_tokens": len(c.token_ids)},
        }

    async def count_tokens(self, req: CountTokensRequest) -> dict[str, int]:
        """The prompt's tokens as the model would see them (template, system prompt and tools)."""
        chat_req, labels = to_chat_request(req)
        self.chat.check_model(chat_req.model)
        mode = self.chat._tool_mode(chat_req)
        parsed = parse_messages(chat_req.messages, self.chat.media, labels)
        if parsed.images:
            raise APIError(f"{parsed.image_parts}: count_tokens does not count image tokens (their number depends "
                           "on the model's image processor); count the text alone", 400, parsed.images[0].where)
        prompt = await self.chat.engine.run_in_tokenizer_thread(self.chat._prompt, chat_req, mode, parsed)
        return {"input_tokens": len(prompt["prompt_token_ids"])}

    async def _stream(self, chat_req: ChatCompletionRequest, rid: str, model: str, mode: Any,
                      gen: AsyncIterator[Any], input_tokens: int) -> AsyncIterator[str]:
        yield _event("message_start", {"message": {
            "id": rid, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 0}}})
        index = -1
        open_text = open_tool = False
        stop_reason: str | None = None
        stop_seq: str | None = None
        usage: dict[str, int] = {}
        try:
            async for chunk in self.chat.chunks(chat_req, rid, model, mode, gen):
                if chunk.usage is not None:
                    usage = {"input_tokens": chunk.usage.prompt_tokens, "output_tokens": chunk.usage.completion_tokens}
                for ch in chunk.choices:
                    d = ch.delta
                    if d.content:
                        if open_tool:
                            yield _event("content_block_stop", {"index": index})
                            open_tool = False
                        if not open_text:
                            index += 1
                            open_text = True
                            yield _event("content_block_start", {"index": index,
                                                                 "content_block": {"type": "text", "text": ""}})
                        yield _event("content_block_delta", {"index": index,
                                                             "delta": {"type": "text_delta", "text": d.content}})
                    for call in d.tool_calls:
                        fn = call.function
                        if call.id is not None:  # a new call: a new tool_use block
                            if open_text or open_tool:
                                yield _event("content_block_stop", {"index": index})
                                open_text = open_tool = False
                            index += 1
                            open_tool = True
                            yield _event("content_block_start", {"index": index, "content_block": {
                                "type": "tool_use", "id": call.id, "name": fn.name if fn else "", "input": {}}})
                        if fn is not None and fn.arguments:
                            yield _event("content_block_delta", {"index": index, "delta": {
                                "type": "input_json_delta", "partial_json": fn.arguments}})
                    if ch.finish_reason is not None:
                        stop_reason = _STOP.get(ch.finish_reason, "end_turn")
                        if isinstance(ch.stop_reason, str):
                            stop_reason, stop_seq = "stop_sequence", ch.stop_reason
        except Exception as exc:  # noqa: BLE001 - the status line is already sent
            err = to_api_error(exc)
            yield _event("error", {"error": anthropic_error_body(err.message, err.status)["error"]})
            return
        if open_text or open_tool:
            yield _event("content_block_stop", {"index": index})
        yield _event("message_delta", {"delta": {"stop_reason": stop_reason, "stop_sequence": stop_seq},
                                       "usage": {"input_tokens": usage.get("input_tokens", input_tokens),
                                                 "output_tokens": usage.get("output_tokens", 0)}})
        yield _event("message_stop", {})


def json_or_event_stream(result: dict[str, Any] | AsyncIterator[str]) -> Response:
    """A finished body as JSON, else the route's own events (Anthropic's, the Responses API's) as
    server-sent events."""
    if isinstance(result, dict):
        return JSONResponse(result)
    return StreamingResponse(result, media_type="text/event-stream")


def add_messages_route(app: FastAPI, engine: AsyncLLM, settings: ServerSettings) -> None:
    messages = ServingMessages(engine, settings)

    @app.post("/v1/messages")
    async def create_message(req: MessagesRequest) -> Response:
        return json_or_event_stream(await messages.create(req))

    @app.post("/v1/messages/count_tokens")
    async def count_tokens(req: CountTokensRequest) -> dict[str, int]:
        return await messages.count_tokens(req)


__all__ = ["CountTokensRequest", "MessagesRequest", "ServingMessages", "add_messages_route"]
