"""tool_choice modes, the reasoning parser and Anthropic's /v1/messages through a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.server.conftest import TINY_ENGINE, RunningServer, start_server

TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}
MSGS = [{"role": "user", "content": "Look it up"}]


def _streamed(client: Any, **kw: Any) -> tuple[str, list[Any], str | None]:
    """Content, the calls assembled from their deltas (name first, arguments in pieces), finish."""
    content, calls, finish = "", {}, None
    for c in client.chat.completions.create(stream=True, **kw):
        if not c.choices:
            continue
        d = c.choices[0].delta
        content += d.content or ""
        for tc in d.tool_calls or []:
            if tc.id is not None:
                calls[tc.index] = tc.model_copy(deep=True)
            elif tc.function and tc.function.arguments:
                calls[tc.index].function.arguments += tc.function.arguments
        finish = c.choices[0].finish_reason or finish
    return content, [calls[i] for i in sorted(calls)], finish


@pytest.mark.parametrize("tool_choice", ["auto", "none", "required", {"type": "function", "function": {"name": "lookup"}}])
def test_tool_choice_modes_stream_like_non_stream(server: RunningServer, tool_choice: Any) -> None:
    client = server.client()
    kw = dict(model=server.model, messages=MSGS, tools=[TOOL], tool_choice=tool_choice, max_tokens=12, temperature=0)
    resp = client.chat.completions.create(**kw)
    msg = resp.choices[0].message
    content, calls, finish = _streamed(client, **kw)
    assert content == (msg.content or "")
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        (c.function.name, c.function.arguments) for c in msg.tool_calls or []]
    assert finish == resp.choices[0].finish_reason
    for call in msg.tool_calls or []:  # the random model may or may not produce a complete call
        assert call.function.name == "lookup" and isinstance(json.loads(call.function.arguments), dict)
    if tool_choice == "none":
        assert not msg.tool_calls


def test_auto_tool_choice_needs_the_flag(tiny_chat_model: str, plain_server: RunningServer) -> None:
    r = httpx.post(f"{plain_server.url}/v1/chat/completions",
                   json={"messages": MSGS, "tools": [TOOL], "tool_choice": "auto"}, timeout=60)
    assert r.status_code == 400 and "--enable-auto-tool-choice" in r.json()["error"]["message"]
    # Without tool_choice the tools are passed to the template and the reply is plain text.
    r = httpx.post(f"{plain_server.url}/v1/chat/completions",
                   json={"messages": MSGS, "tools": [TOOL], "max_tokens": 3}, timeout=60)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["tool_calls"] == []


@pytest.fixture(scope="module")
def plain_server(tiny_chat_model: str) -> Iterator[RunningServer]:
    """No tool parser; the deepseek_r1 reasoning parser."""
    srv = start_server(tiny_chat_model, TINY_ENGINE, reasoning_parser="deepseek_r1")
    yield srv
    srv.stop()


def test_reasoning_content_streaming_and_not(plain_server: RunningServer) -> None:
    client = plain_server.client()
    kw = dict(model=plain_server.model, messages=MSGS, max_tokens=16, temperature=0)
    msg = client.chat.completions.create(**kw).choices[0].message
    raw = client.completions.create(model=plain_server.model, prompt=client.post(
        "/../tokenize", cast_to=object, body={"messages": MSGS})["tokens"], max_tokens=16, temperature=0).choices[0].text
    body = raw.removeprefix("<think>")
    reasoning, _, answer = body.partition("</think>")
    assert msg.model_extra["reasoning_content"] == (reasoning or None)
    assert msg.content == (answer or None)
    streamed_reasoning = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
        for c in client.chat.completions.create(stream=True, **kw) if c.choices)
    assert streamed_reasoning == (reasoning or "")


def test_anthropic_messages_text_and_stream(server: RunningServer) -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    chat = server.client().chat.completions.create(
        model=server.model, messages=[{"role": "system", "content": "Be brief."}, *MSGS], max_tokens=10, temperature=0)
    kw = dict(model=server.model, max_tokens=10, system="Be brief.", messages=MSGS, extra_body={"temperature": 0})
    msg = client.messages.create(**kw)
    assert msg.type == "message" and msg.role == "assistant"
    assert "".join(b.text for b in msg.content if b.type == "text") == chat.choices[0].message.content
    assert msg.usage.input_tokens == chat.usage.prompt_tokens
    assert msg.usage.output_tokens == chat.usage.completion_tokens
    assert msg.stop_reason == {"length": "max_tokens", "stop": "end_turn"}[chat.choices[0].finish_reason]

    with client.messages.stream(**kw) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == chat.choices[0].message.content and final.stop_reason == msg.stop_reason
    assert final.usage.output_tokens == msg.usage.output_tokens


def test_anthropic_bad_request_is_a_4xx(server: RunningServer) -> None:
    r = httpx.post(f"{server.url}/v1/messages", json={"model": server.model, "messages": MSGS}, timeout=30)
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]


def test_structured_outputs_fields(server: RunningServer) -> None:
    client = server.client()
    for extra in ({"guided_choice": ["yes", "no"]}, {"structured_outputs": {"choice": ["yes", "no"]}}):
        resp = client.completions.create(model=server.model, prompt="Answer:", max_tokens=5, temperature=0,
                                         extra_body=extra)
        assert resp.choices[0].text in ("yes", "no")
    chat = client.chat.completions.create(model=server.model, messages=MSGS, max_tokens=8, temperature=0,
                                          extra_body={"structured_outputs": {"regex": "[0-9]{3}"}})
    assert len(chat.choices[0].message.content) == 3 and chat.choices[0].message.content.isdigit()
    bad = httpx.post(f"{server.url}/v1/completions", json={"prompt": "x", "guided_choice": ["a"],
                                                           "structured_outputs": {"regex": "a"}}, timeout=30)
    assert bad.status_code == 400
    bad = httpx.post(f"{server.url}/v1/chat/completions", json={
        "messages": MSGS, "response_format": {"type": "xml"}}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "response_format"
