"""Images end to end through a real server of a tiny random LLaVA-1.5 (the vllm-multimodal plugin):
the ``openai`` client's base64, ``http://127.0.0.1`` and ``file://`` images and Anthropic's image
block all give the tokens offline ``LLM.generate`` gives for the same prompt and image (and
``LLM.chat`` for the same messages); every refusal is a 400 naming the part, and the server keeps
serving."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import RunningServer, start_server
from tests.server.media_http import MediaHTTPServer, media_http_server

from .tiny_models import draw

ENGINE = {"max_model_len": 256, "num_gpu_blocks_override": 64, "block_size": 16, "max_num_seqs": 8,
          "dtype": "float32", "limit_mm_per_prompt": {"image": 2}}
MAX_TOKENS = 8
QUESTION = "What is shown?"
FETCH_TIMEOUT = 0.5
MAX_BYTES = 4096


def png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def data_url(raw: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def ask(*parts: dict[str, Any], text: str = QUESTION) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": text}, *parts]}]


@pytest.fixture(scope="module")
def llava_dir(tiny_llava: tuple[str, Any, Any]) -> str:
    return tiny_llava[0]


@pytest.fixture(scope="module")
def pictures() -> dict[str, bytes]:
    """Two images of different sizes and content (PNG bytes), each under MAX_BYTES."""
    out = {"wide": png(draw(80, 50, 1)), "tall": png(draw(40, 90, 2))}
    assert all(len(b) < MAX_BYTES for b in out.values())
    return out


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory, pictures: dict[str, bytes]) -> Path:
    root = tmp_path_factory.mktemp("media")
    (root / "allowed").mkdir()
    for name, raw in pictures.items():
        (root / "allowed" / f"{name}.png").write_bytes(raw)
    (root / "secret.png").write_bytes(pictures["wide"])
    return root


@pytest.fixture(scope="module")
def http(pictures: dict[str, bytes]) -> Iterator[MediaHTTPServer]:
    with media_http_server({f"/{name}.png": raw for name, raw in pictures.items()}) as srv:
        yield srv


@pytest.fixture(scope="module")
def llava_server(llava_dir: str, media_dir: Path) -> Iterator[RunningServer]:
    srv = start_server(llava_dir, ENGINE, served_name="tiny-llava", allowed_local_media_path=str(media_dir / "allowed"),
                       image_fetch_timeout=FETCH_TIMEOUT, image_fetch_max_bytes=MAX_BYTES)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def offline(llava_dir: str, media_dir: Path) -> Any:
    from vllm_core import LLM

    return LLM(llava_dir, use_tqdm_on_load=False, allowed_local_media_path=str(media_dir / "allowed"), **ENGINE)


def greedy() -> Any:
    from vllm_core import SamplingParams

    return SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def expected(offline: Any, pictures: dict[str, bytes]) -> dict[str, tuple[list[int], list[int]]]:
    """name -> (prompt ids, greedy ids) of offline ``LLM.generate`` on the prompt written by hand:
    the chat template on ``"<image>\\nWhat is shown?"`` (SmolLM2's template renders content as a
    string, so the placeholder goes before the text) and the decoded image."""
    from PIL import Image

    tok = offline.get_tokenizer()
    text = tok.apply_chat_template([{"role": "user", "content": f"<image>\n{QUESTION}"}], tokenize=False,
                                   add_generation_prompt=True)
    out = {}
    for name, raw in pictures.items():
        prompt = {"prompt_token_ids": tok.encode(text, add_special_tokens=False),
                  "multi_modal_data": {"image": Image.open(io.BytesIO(raw)).convert("RGB")}}
        (res,) = offline.generate(prompt, greedy(), use_tqdm=False)
        out[name] = (list(res.prompt_token_ids), list(res.outputs[0].token_ids))
    assert out["wide"][1] != out["tall"][1], "the image must decide the tokens"
    return out


def chat_ids(srv: RunningServer, messages: list[dict[str, Any]], **kw: Any) -> tuple[list[int], list[int], str]:
    resp = srv.client().chat.completions.create(
        model=srv.model, messages=messages, max_tokens=MAX_TOKENS, temperature=0,
        extra_body={"ignore_eos": True, "return_token_ids": True}, **kw)
    extra = resp.model_extra or {}
    choice = resp.choices[0]
    return list(extra["prompt_token_ids"]), list((choice.model_extra or {})["token_ids"]), choice.message.content or ""


def test_base64_image_gives_the_offline_result(llava_server: RunningServer, offline: Any, pictures: dict[str, bytes],
                                               expected: dict[str, tuple[list[int], list[int]]]) -> None:
    for name, raw in pictures.items():
        prompt_ids, ids, _ = chat_ids(llava_server, ask(image_part(data_url(raw))))
        assert ids == expected[name][1], name
        assert prompt_ids == expected[name][0], name  # the image's 16 placeholder tokens included
        (chat,) = offline.chat(ask(image_part(data_url(raw))), greedy(), use_tqdm=False)  # LLM.chat: same parts
        assert list(chat.outputs[0].token_ids) == ids, name


def test_url_and_file_images(llava_server: RunningServer, offline: Any, http: MediaHTTPServer, media_dir: Path,
                             expected: dict[str, tuple[list[int], list[int]]]) -> None:
    for name in ("wide", "tall"):
        for url in (http.url(f"/{name}.png"), f"file://{media_dir}/allowed/{name}.png"):
            assert chat_ids(llava_server, ask(image_part(url)))[1] == expected[name][1], url
    (chat,) = offline.chat(ask(image_part(f"file://{media_dir}/allowed/tall.png")), greedy(), use_tqdm=False)
    assert list(chat.outputs[0].token_ids) == expected["tall"][1]


def test_two_images_and_streaming(llava_server: RunningServer, offline: Any, pictures: dict[str, bytes]) -> None:
    two = ask(image_part(data_url(pictures["wide"])), image_part(data_url(pictures["tall"])), text="Which differs?")
    prompt_ids, ids, text = chat_ids(llava_server, two)
    image_id = offline.get_tokenizer().convert_tokens_to_ids("<image>")
    assert len(ids) == MAX_TOKENS and prompt_ids.count(image_id) == 2 * 16  # 56x56 / 14x14 patches each
    (chat,) = offline.chat(two, greedy(), use_tqdm=False)
    assert list(chat.outputs[0].token_ids) == ids
    stream = llava_server.client().chat.completions.create(
        model=llava_server.model, messages=two, max_tokens=MAX_TOKENS, temperature=0, stream=True,
        extra_body={"ignore_eos": True})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text


def test_anthropic_image_blocks(llava_server: RunningServer, http: MediaHTTPServer, pictures: dict[str, bytes]) -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=llava_server.url, api_key="unused", max_retries=0)
    want = llava_server.client().chat.completions.create(  # /v1/messages has no ignore_eos: neither here
        model=llava_server.model, messages=ask(image_part(data_url(pictures["tall"]))), max_tokens=MAX_TOKENS,
        temperature=0).choices[0].message.content
    blocks = [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": base64.b64encode(pictures["tall"]).decode()}},
        {"type": "image", "source": {"type": "url", "url": http.url("/tall.png")}},
    ]
    for block in blocks:
        msg = client.messages.create(model=llava_server.model, max_tokens=MAX_TOKENS, extra_body={"temperature": 0},
                                     messages=[{"role": "user", "content": [block, {"type": "text", "text": QUESTION}]}])
        assert msg.content[0].text == want  # type: ignore[union-attr]
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model=llava_server.model, max_tokens=2, messages=[{"role": "user", "content": [
            {"type": "text", "text": "x"}, {"type": "image", "source": {"type": "url", "url": http.url("/gone.png")}}]}])
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["message"].startswith("messages[0].content[1]: ") and "HTTP 404" in body["error"]["message"]


def error_cases(http: MediaHTTPServer, media_dir: Path, pictures: dict[str, bytes]) -> list[tuple[Any, str, str]]:
    """(content parts after the text, the part named, a phrase of the message)."""
    ok = image_part(data_url(pictures["wide"]))
    return [
        ([ok, ok, ok], "messages[0].content[3]", "3 images in one prompt, more than the limit of 2"),
        ([image_part(http.url("/slow"))], "messages[0].content[1]", f"timed out after {FETCH_TIMEOUT:g} s"),
        ([image_part(http.url("/big"))], "messages[0].content[1]", f"more than the limit of {MAX_BYTES}"),
        ([image_part(http.url("/big-unannounced"))], "messages[0].content[1]", f"more than the limit of {MAX_BYTES}"),
        ([image_part(http.url("/gone.png"))], "messages[0].content[1]", "HTTP 404"),
        ([image_part("ftp://127.0.0.1/a.png")], "messages[0].content[1]", "scheme 'ftp'"),
        ([image_part(f"file://{media_dir}/secret.png")], "messages[0].content[1]", "outside the allowed directory"),
        ([image_part(f"file://{media_dir}/allowed/../secret.png")], "messages[0].content[1]", "outside the allowed"),
        ([image_part(http.url("/garbage"))], "messages[0].content[1]", "not an image Pillow can decode"),
        ([ok, image_part(data_url(b"GIF89a broken"))], "messages[0].content[2]", "not an image Pillow can decode"),
        ([{"type": "image_url", "image_url": {}}], "messages[0].content[1]", "needs image_url.url"),
    ]


def test_every_refusal_is_a_400_naming_the_part(llava_server: RunningServer, http: MediaHTTPServer, media_dir: Path,
                                                pictures: dict[str, bytes]) -> None:
    good = ask(image_part(data_url(pictures["wide"])))
    for parts, param, needle in error_cases(http, media_dir, pictures):
        for stream in (False, True):
            r = httpx.post(f"{llava_server.url}/v1/chat/completions", timeout=60, json={
                "messages": ask(*parts), "max_tokens": 2, "stream": stream})
            assert r.status_code == 400, (needle, r.text)
            err = r.json()["error"]
            assert err["param"] == param and err["message"].startswith(param + ":") and needle in err["message"], err
        r = httpx.post(f"{llava_server.url}/v1/chat/completions", json={"messages": good, "max_tokens": 2}, timeout=60)
        assert r.status_code == 200, (needle, "the server must keep serving", r.text)
    assert httpx.get(f"{llava_server.url}/health").status_code == 200


def test_engine_errors_name_the_parts(llava_server: RunningServer, pictures: dict[str, bytes]) -> None:
    # the text already writes two placeholders but one image comes: the engine's own check refuses
    r = httpx.post(f"{llava_server.url}/v1/chat/completions", timeout=60, json={
        "messages": ask(image_part(data_url(pictures["wide"])), text="<image> or <image>?"), "max_tokens": 2})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "messages[0].content[1]" and "placeholder" in err["message"], err


def test_offline_chat_refusals(offline: Any, media_dir: Path) -> None:
    from vllm_core.multimodal import MultiModalInputError
    from vllm_core.multimodal.media import MediaError

    with pytest.raises(MediaError, match=r"^messages\[0\]\.content\[1\]: .*outside the allowed directory"):
        offline.chat(ask(image_part(f"file://{media_dir}/secret.png")), greedy(), use_tqdm=False)
    with pytest.raises(MultiModalInputError, match="3 images in one prompt"):
        offline.chat(ask(*[image_part(f"file://{media_dir}/allowed/wide.png")] * 3), greedy(), use_tqdm=False)


def test_cli_serve_flags(llava_dir: str, media_dir: Path, pictures: dict[str, bytes]) -> None:
    """``vllm-core serve`` as users run it: ``--limit-mm-per-prompt`` reaches the engine and
    ``--allowed-local-media-path`` the chat route."""
    from tests.server.test_cli_serve import ServeProcess

    proc = ServeProcess(llava_dir, "--max-model-len", "256", "--num-gpu-blocks-override", "32", "--dtype", "float32",
                        "--limit-mm-per-prompt", '{"image": 2}', "--allowed-local-media-path", str(media_dir / "allowed"))
    try:
        proc.wait_ready()
        client = proc.client()
        image = image_part(f"file://{media_dir}/allowed/wide.png")
        out = client.chat.completions.create(model=llava_dir, messages=ask(image, image), max_tokens=2)
        assert out.usage is not None and out.usage.prompt_tokens > 32
        import openai

        with pytest.raises(openai.BadRequestError, match="3 images in one prompt, more than the limit of 2"):
            client.chat.completions.create(model=llava_dir, messages=ask(image, image, image), max_tokens=2)
        with pytest.raises(openai.BadRequestError, match="outside the allowed directory"):
            client.chat.completions.create(model=llava_dir, max_tokens=2,
                                           messages=ask(image_part(f"file://{media_dir}/secret.png")))
    finally:
        proc.proc.terminate()
        proc.proc.wait(60)


def test_qwen2_vl_server(tiny_qwen2_vl: tuple[str, Any, Any], pictures: dict[str, bytes]) -> None:
    """Qwen2-VL (dynamic resolution, M-RoPE) through the server: its own placeholder text, the
    offline tokens for both images."""
    from PIL import Image

    from vllm_core import LLM

    path = tiny_qwen2_vl[0]
    engine = {**ENGINE, "max_model_len": 512, "num_gpu_blocks_override": 96}
    llm = LLM(path, use_tqdm_on_load=False, **engine)
    tok = llm.get_tokenizer()
    placeholder = "<|vision_start|><|image_pad|><|vision_end|>"
    text = tok.apply_chat_template([{"role": "user", "content": f"{placeholder}\n{QUESTION}"}], tokenize=False,
                                   add_generation_prompt=True)
    srv = start_server(path, engine, served_name="tiny-qwen2-vl")
    try:
        for raw in pictures.values():
            image = Image.open(io.BytesIO(raw)).convert("RGB")
            (want,) = llm.generate({"prompt_token_ids": tok.encode(text, add_special_tokens=False),
                                    "multi_modal_data": {"image": image}}, greedy(), use_tqdm=False)
            prompt_ids, ids, _ = chat_ids(srv, ask(image_part(data_url(raw))))
            assert prompt_ids == list(want.prompt_token_ids) and ids == list(want.outputs[0].token_ids)
    finally:
        srv.stop()


LLAVA_HF_TEMPLATE = (  # llava-hf/llava-1.5-7b-hf's processor template (chat_template.json)
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\\n' }}{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}{% for content in "
    "message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}"
    "{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")


def test_processor_chat_template(llava_dir: str, tmp_path: Path, pictures: dict[str, bytes]) -> None:
    """A llava-hf style checkpoint: no tokenizer template, the processor's in chat_template.json,
    looping over content parts. Image parts become ``{"type": "image"}`` items, text-only
    messages text parts, and the prompt is the one llava-hf's model card writes by hand."""
    import json
    import shutil

    from PIL import Image

    from vllm_core import LLM

    path = tmp_path / "llava-hf-style"
    shutil.copytree(llava_dir, path)
    (path / "chat_template.jinja").unlink()
    (path / "chat_template.json").write_text(json.dumps({"chat_template": LLAVA_HF_TEMPLATE}))
    llm = LLM(str(path), use_tqdm_on_load=False, **ENGINE)
    assert not llm.get_tokenizer().chat_template
    tok = llm.get_tokenizer()
    by_hand = f"USER: <image>\n{QUESTION} ASSISTANT:"
    image = Image.open(io.BytesIO(pictures["wide"])).convert("RGB")
    (want,) = llm.generate({"prompt_token_ids": tok.encode(by_hand, add_special_tokens=False),
                            "multi_modal_data": {"image": image}}, greedy(), use_tqdm=False)
    (chat,) = llm.chat(ask(image_part(data_url(pictures["wide"]))), greedy(), use_tqdm=False)
    assert chat.prompt_token_ids == want.prompt_token_ids and chat.outputs[0].token_ids == want.outputs[0].token_ids
    srv = start_server(str(path), ENGINE, served_name="llava-hf-style")
    try:
        prompt_ids, ids, _ = chat_ids(srv, ask(image_part(data_url(pictures["wide"]))))
        assert prompt_ids == list(want.prompt_token_ids) and ids == list(want.outputs[0].token_ids)
        r = httpx.post(f"{srv.url}/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}, timeout=60)
        assert r.json()["tokens"] == tok.encode("USER: hi ASSISTANT:", add_special_tokens=False), r.text
    finally:
        srv.stop()


def test_responses_api_input_image(llava_server: RunningServer, http: MediaHTTPServer, pictures: dict[str, bytes]) -> None:
    """``/v1/responses`` with ``input_image`` parts (vLLM's Responses API images)."""
    import openai

    client = llava_server.client()
    want = client.chat.completions.create(model=llava_server.model, messages=ask(image_part(data_url(pictures["tall"]))),
                                          max_tokens=MAX_TOKENS, temperature=0).choices[0].message.content
    for url in (data_url(pictures["tall"]), http.url("/tall.png")):
        resp = client.responses.create(model=llava_server.model, max_output_tokens=MAX_TOKENS, temperature=0, input=[
            {"role": "user", "content": [{"type": "input_text", "text": QUESTION},
                                         {"type": "input_image", "image_url": url, "detail": "auto"}]}])
        assert resp.output_text == want
    with pytest.raises(openai.BadRequestError, match=r"input\[1\]\.content\[1\]: .*HTTP 404"):
        client.responses.create(model=llava_server.model, max_output_tokens=2, instructions="Look.", input=[
            {"role": "user", "content": "hello"},
            {"role": "user", "content": [{"type": "input_text", "text": "x"},
                                         {"type": "input_image", "image_url": http.url("/gone.png")}]}])
    with pytest.raises(openai.BadRequestError, match=r"input\[0\]\.content\[0\]: an input_image part needs image_url"):
        client.responses.create(model=llava_server.model, max_output_tokens=2, input=[
            {"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}])
