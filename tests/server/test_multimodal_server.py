"""Image parts sent to a server of a TEXT-ONLY model: each refusal is a 400 (OpenAI's error body on
``/v1/chat/completions``, Anthropic's on ``/v1/messages``) naming the part, nothing is fetched,
and the server keeps serving; text content parts still work as plain strings."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.server.conftest import TINY_ENGINE, RunningServer, start_server
from tests.server.media_http import MediaHTTPServer, media_http_server

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("media")
    (path / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    return path


@pytest.fixture(scope="module")
def text_server(tiny_chat_model: str, media_dir: Path) -> Iterator[RunningServer]:
    srv = start_server(tiny_chat_model, {**TINY_ENGINE, "limit_mm_per_prompt": {"image": 1}},
                       allowed_local_media_path=str(media_dir))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[MediaHTTPServer]:
    with media_http_server({"/a.png": b"\x89PNG\r\n\x1a\n"}) as srv:
        yield srv


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def post(srv: RunningServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{srv.url}{path}", json=body, timeout=60)


def still_serving(srv: RunningServer) -> None:
    r = post(srv, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert r.status_code == 200, r.text


def test_image_part_to_a_text_only_model_is_a_400_naming_the_part(text_server: RunningServer,
                                                                   http: MediaHTTPServer, media_dir: Path) -> None:
    for url in (PNG, http.url("/a.png"), f"file://{media_dir}/a.png"):
        for stream in (False, True):
            body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is it?"}, image_part(url)]}],
                    "max_tokens": 4, "stream": stream}
            r = post(text_server, "/v1/chat/completions", body)
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert err["param"] == "messages[0].content[1]" and err["code"] == 400 and err["type"] == "BadRequestError"
            assert err["message"].startswith("messages[0].content[1]: the model 'test-model' is text-only"), err
            assert "vllm-multimodal" in err["message"]
            still_serving(text_server)
    assert http.hits.get("/a.png", 0) == 0  # refused before anything was fetched


def test_openai_client_gets_bad_request(text_server: RunningServer) -> None:
    client = text_server.client()
    with pytest.raises(openai.BadRequestError, match=r"messages\[1\]\.content\[0\].*text-only"):
        client.chat.completions.create(model=text_server.model, max_tokens=2, messages=[
            {"role": "system", "content": "Look."},
            {"role": "user", "content": [image_part(PNG), {"type": "text", "text": "What is it?"}]},
        ])
    still_serving(text_server)


def test_malformed_parts_and_several_images(text_server: RunningServer) -> None:
    cases = [  # a text-only model: "text-only", not "too many", whatever the count
        ([image_part(PNG), {"type": "text", "text": "x"}, image_part(PNG)], "messages[0].content[0]",
         "messages[0].content[0], messages[0].content[2]: the model 'test-model' is text-only"),
        ([{"type": "image_url"}], "messages[0].content[0]", "needs image_url.url"),
        ([{"type": "text", "text": "x"}, {"type": "video_url", "video_url": {"url": "x"}}], "messages[0].content[1]",
         "'video_url' is not supported"),
    ]
    for content, param, needle in cases:
        r = post(text_server, "/v1/chat/completions", {"messages": [{"role": "user", "content": content}]})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"] == param and needle in err["message"], err
        still_serving(text_server)


def test_text_parts_are_plain_strings(text_server: RunningServer) -> None:
    client = text_server.client()
    kw: dict[str, Any] = dict(model=text_server.model, max_tokens=6, temperature=0)
    parts = client.chat.completions.create(messages=[{"role": "user", "content": [
        {"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]}], **kw)
    plain = client.chat.completions.create(messages=[{"role": "user", "content": "Hello\nthere"}], **kw)
    assert parts.choices[0].message.content == plain.choices[0].message.content
    assert parts.usage.prompt_tokens == plain.usage.prompt_tokens


def test_anthropic_image_block_gets_anthropic_400(text_server: RunningServer) -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=text_server.url, api_key="unused", max_retries=0)
    block = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG.split(",", 1)[1]}}
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model=text_server.model, max_tokens=4, system="Look.", messages=[
            {"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "and this?"}, block]}])
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error", body
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("messages[2].content[1]: the model 'test-model' is text-only"), body
    r = post(text_server, "/v1/messages", {"max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "AA"}}]}]})
    assert r.status_code == 400 and "'image/bmp'" in r.json()["error"]["message"], r.text
    assert r.json()["error"]["message"].startswith("messages[0].content[0]")
    r = post(text_server, "/v1/messages/count_tokens", {"messages": [{"role": "user", "content": [block]}]})
    assert r.status_code == 400 and "image" in r.json()["error"]["message"], r.text
    msg = client.messages.create(model=text_server.model, max_tokens=2, messages=[{"role": "user", "content": "hi"}])
    assert msg.usage.output_tokens >= 1


def test_tokenize_refuses_image_parts(text_server: RunningServer) -> None:
    r = post(text_server, "/tokenize", {"messages": [{"role": "user", "content": [image_part(PNG)]}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages[0].content[0]", r.text


def test_offline_chat_text_only_model(tiny_chat_model: str) -> None:
    from vllm_core import LLM, SamplingParams
    from vllm_core.multimodal import MultiModalInputError

    llm = LLM(tiny_chat_model, use_tqdm_on_load=False, max_model_len=128, num_gpu_blocks_override=16)
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi"}, image_part(PNG)]}]
    with pytest.raises(MultiModalInputError, match=r"^messages\[0\]\.content\[1\]: the model .* is text-only"):
        llm.chat(messages, SamplingParams(max_tokens=2), use_tqdm=False)
    (out,) = llm.chat([{"role": "user", "content": [{"type": "text", "text": "hi"}]}], SamplingParams(max_tokens=2),
                      use_tqdm=False)
    assert len(out.outputs[0].token_ids) == 2
