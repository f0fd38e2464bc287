"""Anthropic's ``count_tokens``, error shape and streamed usage; vLLM's
``stream_options.continuous_usage_stats`` and ``return_token_ids``; all through the official clients."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import pytest

from tests.server.conftest import RunningServer

MSGS = [{"role": "user", "content": "Tell me about the sea."}]


def _anthropic(server: RunningServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)


def test_count_tokens_and_streamed_input_tokens(server: RunningServer) -> None:
    client = _anthropic(server)
    counted = client.messages.count_tokens(model=server.model, system="Be brief.", messages=MSGS)
    kw: dict[str, Any] = dict(model=server.model, max_tokens=6, system="Be brief.", messages=MSGS)
    msg = client.messages.create(**kw)
    assert counted.input_tokens == msg.usage.input_tokens > 5
    with client.messages.stream(**kw) as stream:
        events = list(stream)
        final = stream.get_final_message()
    start = next(e for e in events if e.type == "message_start")
    assert start.message.usage.input_tokens == msg.usage.input_tokens
    assert final.usage.input_tokens == msg.usage.input_tokens and final.usage.output_tokens == msg.usage.output_tokens


def test_anthropic_error_shape(server: RunningServer) -> None:
    r = httpx.post(f"{server.url}/v1/messages", json={"model": server.model, "messages": MSGS}, timeout=30)
    assert r.status_code == 400
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]
    client = _anthropic(server)
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="claude-nope", max_tokens=4, messages=MSGS)
    assert info.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model=server.model, max_tokens=4, messages=MSGS, extra_body={"temperature": -1})
    assert bad.value.body["type"] == "error" and "temperature" in bad.value.body["error"]["message"]  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError):
        client.messages.count_tokens(model=server.model, messages=[])
    # The OpenAI routes keep OpenAI's shape.
    r = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": []}, timeout=30)
    assert set(r.json()) == {"error"}


def _sse(server: RunningServer, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    with httpx.stream("POST", f"{server.url}{path}", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                out.append(json.loads(line[6:]))
    return out


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_continuous_usage_stats(server: RunningServer, path: str) -> None:
    body: dict[str, Any] = {"model": server.model, "max_tokens": 6, "ignore_eos": True, "stream": True,
                            "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    body.update({"prompt": "Once upon a time"} if "chat" not in path else {"messages": MSGS})
    events = _sse(server, path, body)
    with_choices = [e for e in events if e["choices"]]
    assert with_choices and all(e["usage"] is not None for e in with_choices)
    counts = [e["usage"]["completion_tokens"] for e in with_choices]
    assert counts == sorted(counts) and counts[-1] == 6
    prompt = {e["usage"]["prompt_tokens"] for e in events}
    assert len(prompt) == 1 and prompt.pop() > 0
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 6
    plain = _sse(server, path, {**body, "stream_options": {"include_usage": True}})
    assert all(e["usage"] is None for e in plain if e["choices"])


def test_return_token_ids(server: RunningServer) -> None:
    client = server.client()
    prompt = "Once upon a time"
    ids = httpx.post(f"{server.url}/tokenize", json={"prompt": prompt}, timeout=30).json()["tokens"]
    r = client.completions.create(model=server.model, prompt=prompt, max_tokens=6, temperature=0,
                                  extra_body={"return_token_ids": True})
    c = r.choices[0].model_extra
    assert c["prompt_token_ids"] == ids and len(c["token_ids"]) == 6
    detok = httpx.post(f"{server.url}/detokenize", json={"tokens": c["token_ids"]}, timeout=30).json()["prompt"]
    assert detok == r.choices[0].text
    events = _sse(server, "/v1/completions", {"model": server.model, "prompt": prompt, "max_tokens": 6,
                                              "temperature": 0, "stream": True, "return_token_ids": True})
    assert events[0]["choices"][0]["prompt_token_ids"] == ids
    assert [t for e in events for t in (e["choices"][0].get("token_ids") or [])] == c["token_ids"]
    chat = client.chat.completions.create(model=server.model, messages=MSGS, max_tokens=5, temperature=0,
                                          extra_body={"return_token_ids": True})
    chat_ids = httpx.post(f"{server.url}/tokenize", json={"messages": MSGS}, timeout=30).json()["tokens"]
    assert chat.model_extra["prompt_token_ids"] == chat_ids
    assert len(chat.choices[0].model_extra["token_ids"]) == chat.usage.completion_tokens
    chunks = _sse(server, "/v1/chat/completions", {"model": server.model, "messages": MSGS, "max_tokens": 5,
                                                   "temperature": 0, "stream": True, "return_token_ids": True})
    assert chunks[0]["prompt_token_ids"] == chat_ids
    streamed = [t for e in chunks for ch in e["choices"] for t in (ch.get("token_ids") or [])]
    assert streamed == chat.choices[0].model_extra["token_ids"]
    plain = client.completions.create(model=server.model, prompt=prompt, max_tokens=2)
    assert plain.choices[0].model_extra.get("token_ids") is None
