"""``/v1/responses`` through the official client: the same text as the chat endpoint for the same
conversation, the streaming event sequence, ``previous_response_id`` within the server's
lifetime, and function tools."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.server.conftest import RunningServer

TOOL = {"type": "function", "name": "lookup", "description": "Look something up",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}


def _chat(server: RunningServer, messages: list[dict[str, Any]], max_tokens: int, **kw: Any) -> Any:
    return server.client().chat.completions.create(model=server.model, messages=messages, max_tokens=max_tokens,
                                                   temperature=0, **kw)


def test_text_matches_chat(server: RunningServer) -> None:
    client = server.client()
    r = client.responses.create(model=server.model, input="Tell me a story.", instructions="Be brief.",
                                max_output_tokens=8, temperature=0)
    chat = _chat(server, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a story."}],
                 8)
    assert r.object == "response" and r.id.startswith("resp")
    assert r.output_text == chat.choices[0].message.content
    assert r.usage.input_tokens == chat.usage.prompt_tokens and r.usage.output_tokens == chat.usage.completion_tokens
    if chat.choices[0].finish_reason == "length":
        assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    else:
        assert r.status == "completed"
    items = client.responses.create(model=server.model, max_output_tokens=8, temperature=0, instructions="Be brief.",
                                    input=[{"role": "user", "content": [{"type": "input_text",
                                                                          "text": "Tell me a story."}]}])
    assert items.output_text == r.output_text


def test_stream_events(server: RunningServer) -> None:
    client = server.client()
    kw: dict[str, Any] = dict(model=server.model, input="Count to five.", max_output_tokens=10, temperature=0)
    full = client.responses.create(**kw)
    events = list(client.responses.create(stream=True, **kw))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == full.output_text
    for kind in ("response.output_item.added", "response.content_part.added", "response.output_text.done",
                 "response.content_part.done", "response.output_item.done"):
        assert kind in kinds, kind
    assert events[-1].response.output_text == full.output_text
    assert events[-1].response.usage.output_tokens == full.usage.output_tokens


def test_previous_response_id(server: RunningServer) -> None:
    client = server.client()
    first = client.responses.create(model=server.model, input="My name is Ada.", max_output_tokens=6, temperature=0)
    second = client.responses.create(model=server.model, input="What is my name?", max_output_tokens=6,
                                     temperature=0, previous_response_id=first.id)
    chat = _chat(server, [{"role": "user", "content": "My name is Ada."},
                          {"role": "assistant", "content": first.output_text},
                          {"role": "user", "content": "What is my name?"}], 6)
    assert second.output_text == chat.choices[0].message.content
    assert second.usage.input_tokens == chat.usage.prompt_tokens
    assert second.previous_response_id == first.id
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=server.model, input="hi", previous_response_id="resp_nope")
    gone = client.responses.create(model=server.model, input="x", max_output_tokens=2, store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=server.model, input="hi", previous_response_id=gone.id)


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "name": "lookup"}])
def test_function_tools_match_chat(server: RunningServer, tool_choice: Any) -> None:
    client = server.client()
    r = client.responses.create(model=server.model, input="Look it up", tools=[TOOL], tool_choice=tool_choice,
                                max_output_tokens=12, temperature=0)
    chat_tool = {"type": "function", "function": {k: v for k, v in TOOL.items() if k != "type"}}
    chat_choice = tool_choice if isinstance(tool_choice, str) else {"type": "function",
                                                                     "function": {"name": "lookup"}}
    chat = _chat(server, [{"role": "user", "content": "Look it up"}], 12, tools=[chat_tool], tool_choice=chat_choice)
    calls = [(i.name, i.arguments) for i in r.output if i.type == "function_call"]
    assert calls == [(c.function.name, c.function.arguments) for c in chat.choices[0].message.tool_calls or []]
    for _, args in calls:
        assert isinstance(json.loads(args), dict)
    streamed = [e.item for e in client.responses.create(stream=True, model=server.model, input="Look it up",
                                                        tools=[TOOL], tool_choice=tool_choice, max_output_tokens=12,
                                                        temperature=0)
                if e.type == "response.output_item.done" and e.item.type == "function_call"]
    assert [(i.name, i.arguments) for i in streamed] == calls
