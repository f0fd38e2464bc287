"""Bad input gets a 4xx with OpenAI's error body and the server keeps answering; the API key is
enforced; a dead engine process turns ``/health`` to 503 and requests fail fast."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.server.conftest import TINY_ENGINE, RunningServer, start_server
from vllm_core.errors import ConfigError

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def _post(server: RunningServer, path: str, **kw: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", timeout=60, **kw)


def _cases(model: str) -> list[tuple[str, str, dict[str, Any] | bytes, int, str]]:
    msgs = [{"role": "user", "content": "hi"}]
    return [
        ("unknown model", COMPLETIONS, {"model": "gpt-9", "prompt": "hi"}, 404, "gpt-9"),
        ("prompt too long", COMPLETIONS, {"model": model, "prompt": "word " * 400}, 400, "maximum context length"),
        ("max_tokens past the model length", COMPLETIONS, {"prompt": "hi", "max_tokens": 10_000}, 400,
         "maximum context length"),
        ("invalid JSON", COMPLETIONS, b'{"prompt": "hi",', 400, "not valid JSON"),
        ("wrong type", COMPLETIONS, {"prompt": "hi", "max_tokens": "many"}, 400, "max_tokens"),
        ("missing prompt", COMPLETIONS, {"model": model}, 400, "prompt"),
        ("n too large", COMPLETIONS, {"prompt": "hi", "n": 100_000}, 400, "n"),
        ("bad sampling value", COMPLETIONS, {"prompt": "hi", "temperature": -1}, 400, "temperature"),
        ("empty prompt", COMPLETIONS, {"prompt": ""}, 400, "empty"),
        ("token out of vocabulary", COMPLETIONS, {"prompt": [10_000_000]}, 400, "vocabulary"),
        ("chat: no messages", CHAT, {"messages": []}, 400, "messages"),
        ("chat: bad role", CHAT, {"messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
        ("chat: image part without a URL", CHAT, {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
         "image_url.url"),
        ("chat: invalid tool schema", CHAT, {"messages": msgs, "tools": [{"type": "function", "function": {
            "name": "f", "parameters": {"type": "string"}}}]}, 400, "object"),
        ("chat: tool without a name", CHAT, {"messages": msgs, "tools": [{"type": "function", "function": {}}]},
         400, "name"),
        ("chat: named tool not in tools", CHAT, {"messages": msgs, "tools": [TOOL], "tool_choice": {
            "type": "function", "function": {"name": "nope"}}}, 400, "nope"),
        ("chat: tool_choice without tools", CHAT, {"messages": msgs, "tool_choice": "required"}, 400, "tools"),
        ("stream: bad request before the stream", COMPLETIONS, {"prompt": "word " * 400, "stream": True}, 400,
         "maximum context length"),
    ]


def test_every_bad_request_is_a_4xx_with_the_openai_body(server: RunningServer) -> None:
    for name, path, body, status, needle in _cases(server.model):
        kw: dict[str, Any] = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(
            body, bytes) else {"json": body}
        r = _post(server, path, **kw)
        assert r.status_code == status, (name, r.status_code, r.text)
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["code"] == status, name
        assert needle in err["message"] or needle == err["param"], (name, err)
        ok = _post(server, COMPLETIONS, json={"prompt": "hi", "max_tokens": 2})
        assert ok.status_code == 200, (name, "the server must keep answering")
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_openai_client_raises_typed_errors(server: RunningServer) -> None:
    client = server.client()
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="hi")
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "x " * 400}])
    assert "maximum context length" in str(info.value)


def test_unknown_parser_fails_at_startup(server: RunningServer) -> None:
    from vllm_core.entrypoints.openai.serving_chat import ServingChat
    from vllm_core.entrypoints.openai.serving_engine import ServerSettings

    with pytest.raises(ConfigError, match="unknown tool parser 'nope'; registered: hermes"):
        ServingChat(server.engine, ServerSettings(("m",), tool_call_parser="nope"))
    with pytest.raises(ConfigError, match="unknown reasoning parser 'nope'; registered: deepseek_r1"):
        ServingChat(server.engine, ServerSettings(("m",), reasoning_parser="nope"))


@pytest.fixture(scope="module")
def keyed_server(tiny_chat_model: str) -> Iterator[RunningServer]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLLM_CORE_API_KEY", "sk-secret")  # read once, when the app is built
        srv = start_server(tiny_chat_model, TINY_ENGINE)
    yield srv
    srv.stop()


def test_api_key_from_env_is_enforced_on_v1(keyed_server: RunningServer) -> None:
    with pytest.raises(openai.AuthenticationError):
        keyed_server.client(api_key="wrong").models.list()
    r = httpx.post(f"{keyed_server.url}{COMPLETIONS}", json={"prompt": "hi"})
    assert r.status_code == 401 and r.json()["error"]["code"] == 401
    assert keyed_server.client(api_key="sk-secret").completions.create(
        model=keyed_server.model, prompt="hi", max_tokens=2).usage.completion_tokens >= 1
    assert httpx.get(f"{keyed_server.url}/health").status_code == 200  # not under /v1


def test_health_turns_503_when_the_engine_process_dies(tiny_chat_model: str) -> None:
    srv = start_server(tiny_chat_model, TINY_ENGINE)
    try:
        client = srv.client()
        assert httpx.get(f"{srv.url}/health").status_code == 200
        srv.engine.client.proc.kill()
        srv.engine.client.proc.join(30)
        deadline = 0
        while httpx.get(f"{srv.url}/health").status_code != 503 and deadline < 100:
            deadline += 1
            httpx.get(f"{srv.url}/version")
        r = httpx.get(f"{srv.url}/health")
        assert r.status_code == 503 and "engine" in r.json()["error"]["message"]
        with pytest.raises(openai.InternalServerError) as info:
            client.completions.create(model=srv.model, prompt="hi", max_tokens=2)
        assert info.value.status_code == 503
        assert httpx.get(f"{srv.url}/metrics").status_code == 200
    finally:
        srv.stop()


def test_back_pressure_refuses_with_429(server: RunningServer) -> None:
    import asyncio

    from vllm_core.entrypoints.openai.errors import APIError
    from vllm_core.entrypoints.openai.protocol import CompletionRequest
    from vllm_core.entrypoints.openai.serving_completion import ServingCompletion
    from vllm_core.entrypoints.openai.serving_engine import ServerSettings

    serving = ServingCompletion(server.engine, ServerSettings((server.model,), max_pending_requests=1))

    async def go() -> int:
        await serving._submit(CompletionRequest(prompt="hi", max_tokens=100, ignore_eos=True), "bp-1")
        try:
            await serving._submit(CompletionRequest(prompt="hi"), "bp-2")
        except APIError as exc:
            return exc.status
        finally:
            server.engine.abort("bp-1-0")
        return 200

    assert asyncio.run_coroutine_threadsafe(go(), server.loop).result(30) == 429
    assert _post(server, COMPLETIONS, json={"prompt": "hi", "max_tokens": 2}).status_code == 200
