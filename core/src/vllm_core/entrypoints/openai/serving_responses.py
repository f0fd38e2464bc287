"""``POST /v1/responses``: OpenAI's Responses API on top of the chat endpoint, so
``client.responses.create`` (and its streaming) works against the server.

A request (``input`` text or items, ``instructions``, function ``tools``, ``tool_choice``,
``text.format``, ``max_output_tokens``) is translated into a chat request and run through
``ServingChat``; the result comes back as output items (``message`` with ``output_text``,
``function_call``). ``previous_response_id`` continues a conversation the server stored during its
lifetime (in memory, the newest ``MAX_STORED`` responses; ``store: false`` keeps none). Streams
send the Responses event sequence: ``response.created``, ``response.in_progress``,
``response.output_item.added``, ``response.content_part.added``, ``response.output_text.delta``
..., the matching ``*.done`` events, and ``response.completed``.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Union

from fastapi import FastAPI, Response
from pydantic import BaseModel, ConfigDict, Field

from vllm_core.engine.async_llm import AsyncLLM
from vllm_core.entrypoints.openai.errors import APIError, error_body, to_api_error
from vllm_core.entrypoints.openai.protocol import ChatChoice, ChatCompletionRequest, random_id
from vllm_core.entrypoints.openai.serving_chat import ServingChat
from vllm_core.entrypoints.openai.serving_engine import ServerSettings
from vllm_core.entrypoints.openai.serving_messages import json_or_event_stream

MAX_STORED = 1024
"""Responses kept for ``previous_response_id`` (the oldest are forgotten first)."""


class ResponsesRequest(BaseModel):
    """The fields of OpenAI's ``POST /v1/responses`` this server understands; others are ignored."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())
    model: str | None = None
    input: Union[str, list[dict[str, Any]]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    stream: bool = False
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Union[str, dict[str, Any], None] = None
    parallel_tool_calls: bool = True
    store: bool = True
    metadata: dict[str, Any] | None = None
    text: dict[str, Any] | None = None
    user: str | None = None


@dataclass
class _Stored:
    messages: list[dict[str, Any]]
    """The conversation so far, as chat messages (without the instructions)."""


def _content_of(content: Any, where: str) -> str | list[dict[str, Any]]:
    """A message's content for the chat request: its text, or with ``input_image`` parts the
    chat's content parts in order (``image_url`` parts, loaded and checked by the chat route)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise APIError(f"{where}.content must be a string or a list of parts", 400, "input")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise APIError(f"{where}.content[{j}]: an input_image part needs image_url, a data:, file:// or "
                               f"http(s):// URL (file_id is not supported), got {url!r}", 400, f"{where}.content[{j}]")
            detail = {"detail": part["detail"]} if part.get("detail") else {}
            parts.append({"type": "image_url", "image_url": {"url": url, **detail}})
        else:
            raise APIError(f"{where}: content part type {kind!r} is not supported (input_text, output_text, "
                           "input_image)", 400, "input")
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def input_messages(items: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Responses ``input`` as chat messages."""
    return labelled_input_messages(items)[0]


def labelled_input_messages(items: str | list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Responses ``input`` as chat messages, and per message the ``input[i]`` item it came from
    (errors about a content part name the client's part: ``input[0].content[1]``)."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}], ["input"]
    messages: list[dict[str, Any]] = []
    labels: list[str] = []
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        where = f"input[{i}]"
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise APIError(f"{where}.role must be user, assistant, system or developer, got {role!r}", 400,
                               "input")
            messages.append({"role": "system" if role == "developer" else role,
                             "content": _content_of(item.get("content", ""), where)})
            labels.append(where)
        elif kind == "function_call":
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments", "{}")}}
            if messages and messages[-1]["role"] == "assistant" and not messages[-1].get("content"):
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
                labels.append(where)
        elif kind == "function_call_output":
            output = item.get("output", "")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": output if isinstance(output, str) else json.dumps(output)})
            labels.append(where)
        else:
            raise APIError(f"{where}: item type {kind!r} is not supported (message, function_call, "
                           "function_call_output)", 400, "input")
    return messages, labels


def _chat_tools(req: ResponsesRequest) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if req.tools:
        tools = []
        for t in req.tools:
            if t.get("type") != "function":
                raise APIError(f"tool type {t.get('type')!r} is not supported; only function tools are", 400, "tools")
            tools.append({"type": "function", "function": {
                "name": t.get("name"), "description": t.get("description"),
                "parameters": t.get("parameters") or {"type": "object"}}})
        out["tools"] = tools
    choice = req.tool_choice
    if isinstance(choice, dict):
        if choice.get("type") != "function":
            raise APIError(f"tool_choice type {choice.get('type')!r} is not supported", 400, "tool_choice")
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        out["tool_choice"] = choice
    return out


def _response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    fmt = (text or {}).get("format")
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": fmt.get("name"), "schema": fmt.get("schema")}}
    return {"type": fmt.get("type")}


class ServingResponses:
    def __init__(self, engine: AsyncLLM, settings: ServerSettings) -> None:
        self.chat = ServingChat(engine, settings)
        self.stored: OrderedDict[str, _Stored] = OrderedDict()

    def _history(self, req: ResponsesRequest) -> list[dict[str, Any]]:
        if req.previous_response_id is None:
            return []
        prev = self.stored.get(req.previous_response_id)
        if prev is None:
            raise APIError(f"Response with id '{req.previous_response_id}' not found (responses are kept for the "
                           f"server's lifetime, the newest {MAX_STORED}, and only with store=true)", 404,
                           "previous_response_id")
        return list(prev.messages)

    def _store(self, rid: str, messages: list[dict[str, Any]]) -> None:
        self.stored[rid] = _Stored(messages)
        while len(self.stored) > MAX_STORED:
            self.stored.popitem(last=False)

    async def create(self, req: ResponsesRequest) -> dict[str, Any] | AsyncIterator[str]:
        history = self._history(req)
        new, new_labels = labelled_input_messages(req.input)
        conversation = history + new
        system = [{"role": "system", "content": req.instructions}] if req.instructions else []
        labels = ["instructions"] * len(system) + [f"previous_response_id's messages[{k}]" for k in range(len(history))]
        labels += new_labels
        chat: dict[str, Any] = {
            "model": req.model, "messages": system + conversation, "max_completion_tokens": req.max_output_tokens,
            "temperature": req.temperature, "top_p": req.top_p, "stream": req.stream,
            "parallel_tool_calls": req.parallel_tool_calls, "response_format": _response_format(req.text),
            **_chat_tools(req),
        }
        chat_req = ChatCompletionRequest.model_validate(chat)
        rid = random_id("resp")
        mode, gen = await self.chat.submit(chat_req, rid, labels)
        model = req.model or self.chat.model_name
        base = self._skeleton(req, rid, model)
        if req.stream:
            return self._stream(req, chat_req, rid, mode, gen, base, conversation)
        out = await self.chat.collect(gen, mode)
        c = out.outputs[0]
        choice = self.chat._choice(0, c.text, c.finish_reason, c.stop_reason, mode)
        output = _output_items(choice)
        usage = _usage(len(out.prompt_token_ids), len(c.token_ids))
        if req.store:
            self._store(rid, conversation + [_assistant_message(choice)])
        return _finish(base, output, usage, c.finish_reason)

    @staticmethod
    def _skeleton(req: ResponsesRequest, rid: str, model: str) -> dict[str, Any]:
        return {
            "id": rid, "object": "response", "created_at": int(time.time()), "model": model, "status": "in_progress",
            "output": [], "parallel_tool_calls": req.parallel_tool_calls, "tool_choice": req.tool_choice or "auto",
            "tools": req.tools or [], "temperature": req.temperature, "top_p": req.top_p,
            "max_output_tokens": req.max_output_tokens, "previous_response_id": req.previous_response_id,
            "instructions": req.instructions, "metadata": req.metadata or {}, "store": req.store,
            "text": req.text or {"format": {"type": "text"}}, "truncation": "disabled", "error": None,
            "incomplete_details": None, "usage": None, "user": req.user,
        }

    async def _stream(self, req: ResponsesRequest, chat_req: ChatCompletionRequest, rid: str, mode: Any,
                      gen: AsyncIterator[Any], base: dict[str, Any],
                      conversation: list[dict[str, Any]]) -> AsyncIterator[str]:
        seq = 0

        def event(kind: str, **data: Any) -> str:
            nonlocal seq
            payload = {"type": kind, "sequence_number": seq, **data}
            seq += 1
            return f"event: {kind}\ndata: {json.dumps(payload)}\n\n"

        yield event("response.created", response=base)
        yield event("response.in_progress", response=base)
        output: list[dict[str, Any]] = []
        msg_id = random_id("msg")
        text: str | None = None  # None until the message item is opened
        calls: list[dict[str, Any]] = []
        finish: str | None = None
        usage: dict[str, Any] = _usage(0, 0)
        model = base["model"]
        try:
            async for chunk in self.chat.chunks(chat_req, rid, model, mode, gen):
                if chunk.usage is not None:
                    usage = _usage(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for ch in chunk.choices:
                    d = ch.delta
                    if d.content:
                        if text is None:
                            text = ""
                            item = {"type": "message", "id": msg_id, "status": "in_progress", "role": "assistant",
                                    "content": []}
                            yield event("response.output_item.added", output_index=len(output), item=item)
                            yield event("response.content_part.added", item_id=msg_id, output_index=len(output),
                                        content_index=0, part=_text_part(""))
                        text += d.content
                        yield event("response.output_text.delta", item_id=msg_id, output_index=len(output),
                                    content_index=0, delta=d.content, logprobs=[])
                    for call in d.tool_calls:
                        fn = call.function
                        if call.id is not None or not calls:
                            calls.append({"type": "function_call", "id": random_id("fc"),
                                          "call_id": call.id or random_id("call"), "name": fn.name if fn else "",
                                          "arguments": "", "status": "in_progress"})
                        if fn is not None and fn.arguments:
                            calls[-1]["arguments"] += fn.arguments
                    if ch.finish_reason is not None:
                        finish = ch.finish_reason
        except Exception as exc:  # noqa: BLE001 - the status line is already sent
            err = to_api_error(exc)
            yield event("error", **error_body(err.message, err.status, err.param)["error"])
            return
        if text is not None:
            index = len(output)
            yield event("response.output_text.done", item_id=msg_id, output_index=index, content_index=0, text=text,
                        logprobs=[])
            yield event("response.content_part.done", item_id=msg_id, output_index=index, content_index=0,
                        part=_text_part(text))
            item = _message_item(msg_id, text)
            yield event("response.output_item.done", output_index=index, item=item)
            output.append(item)
        for fc in calls:
            index = len(output)
            yield event("response.output_item.added", output_index=index, item=fc)
            yield event("response.function_call_arguments.delta", item_id=fc["id"], output_index=index,
                        delta=fc["arguments"])
            yield event("response.function_call_arguments.done", item_id=fc["id"], output_index=index,
                        arguments=fc["arguments"])
            done_call = {**fc, "status": "completed"}
            yield event("response.output_item.done", output_index=index, item=done_call)
            output.append(done_call)
        if req.store:
            assistant: dict[str, Any] = {"role": "assistant", "content": text or ""}
            if calls:
                assistant["tool_calls"] = [{"id": c["call_id"], "type": "function", "function": {
                    "name": c["name"], "arguments": c["arguments"]}} for c in calls]
            self._store(rid, conversation + [assistant])
        done = _finish(base, output, usage, finish)
        yield event("response.completed" if done["status"] == "completed" else "response.incomplete", response=done)


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _message_item(msg_id: str, text: str) -> dict[str, Any]:
    return {"type": "message", "id": msg_id, "status": "completed", "role": "assistant",
            "content": [_text_part(text)]}


def _output_items(choice: ChatChoice) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if choice.message.content:
        items.append(_message_item(random_id("msg"), choice.message.content))
    for call in choice.message.tool_calls:
        items.append({"type": "function_call", "id": random_id("fc"), "call_id": call.id,
                      "name": call.function.name, "arguments": call.function.arguments, "status": "completed"})
    return items


def _assistant_message(choice: ChatChoice) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": choice.message.content or ""}
    if choice.message.tool_calls:
        msg["tool_calls"] = [c.model_dump() for c in choice.message.tool_calls]
    return msg


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + completion}


def _finish(base: dict[str, Any], output: list[dict[str, Any]], usage: dict[str, Any],
            finish_reason: str | None) -> dict[str, Any]:
    incomplete = finish_reason == "length"
    return {**base, "status": "incomplete" if incomplete else "completed", "output": output, "usage": usage,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None}


def add_responses_route(app: FastAPI, engine: AsyncLLM, settings: ServerSettings) -> ServingResponses:
    responses = ServingResponses(engine, settings)

    @app.post("/v1/responses")
    async def create_response(req: ResponsesRequest) -> Response:
        return json_or_event_stream(await responses.create(req))

    @app.get("/v1/responses/{response_id}")
    async def get_response(response_id: str) -> Response:
        raise APIError(f"Response with id '{response_id}' cannot be retrieved: this server keeps conversations "
                       "for previous_response_id only", 404, "response_id")

    return responses


__all__ = ["ResponsesRequest", "ServingResponses", "add_responses_route", "input_messages", "labelled_input_messages"]
