"""Image loading (``vllm_core.multimodal.media``) against a real HTTP server on 127.0.0.1 and real
files: every URL kind, every refusal, sync (offline ``LLM.chat``) and async (the server) alike."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import import_or_require
from tests.server.media_http import MediaHTTPServer, media_http_server, png_bytes
from vllm_core.multimodal.media import MediaConnector, MediaError

PART = "messages[0].content[1]"
MODES = ("sync", "async")


@pytest.fixture(scope="module")
def pil() -> Any:
    return import_or_require("PIL.Image", "pillow")


@pytest.fixture(scope="module")
def http(pil: Any) -> Iterator[MediaHTTPServer]:
    with media_http_server({"/red.png": png_bytes((8, 6), (200, 30, 40))}) as srv:
        yield srv


def load(connector: MediaConnector, url: str, mode: str, where: str = PART) -> Any:
    if mode == "sync":
        return connector.load_image(url, where)
    return asyncio.run(connector.load_image_async(url, where))


def refused(connector: MediaConnector, url: str, mode: str, *needles: str) -> MediaError:
    with pytest.raises(MediaError) as info:
        load(connector, url, mode)
    message = str(info.value)
    assert PART in message and info.value.param == PART, message
    for needle in needles:
        assert needle in message, (needle, message)
    return info.value


@pytest.mark.parametrize("mode", MODES)
def test_http_image_and_redirect(http: MediaHTTPServer, mode: str) -> None:
    for path in ("/red.png", "/redirect"):
        image = load(MediaConnector.create(), http.url(path), mode)
        assert image.size == (8, 6) and image.mode == "RGB" and image.getpixel((0, 0)) == (200, 30, 40)


@pytest.mark.parametrize("mode", MODES)
def test_http_timeout_and_slow_drip(http: MediaHTTPServer, mode: str) -> None:
    connector = MediaConnector.create(fetch_timeout=0.5)
    for path in ("/slow", "/drip"):  # no answer in time; an answer whose every byte is in time but not the whole
        start = time.monotonic()
        refused(connector, http.url(path), mode, "timed out after 0.5 s", "VLLM_IMAGE_FETCH_TIMEOUT", path)
        assert time.monotonic() - start < 2.5, path


@pytest.mark.parametrize("mode", MODES)
def test_http_too_large_announced_or_not(http: MediaHTTPServer, mode: str) -> None:
    connector = MediaConnector.create(max_bytes=1024)
    refused(connector, http.url("/big"), mode, "8192 bytes, more than the limit of 1024", "VLLM_IMAGE_FETCH_MAX_BYTES")
    refused(connector, http.url("/big-unannounced"), mode, "more than the limit of 1024")


@pytest.mark.parametrize("mode", MODES)
def test_http_404_and_unreachable(http: MediaHTTPServer, mode: str) -> None:
    connector = MediaConnector.create(fetch_timeout=2)
    refused(connector, http.url("/nope.png"), mode, "HTTP 404", "/nope.png")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused(connector, f"http://127.0.0.1:{port}/x.png", mode, "failed", "reachable")


@pytest.mark.parametrize("mode", MODES)
def test_undecodable_bytes(http: MediaHTTPServer, mode: str) -> None:
    connector = MediaConnector.create()
    refused(connector, http.url("/garbage"), mode, "not an image Pillow can decode", "PNG, JPEG")
    data = "data:image/png;base64," + base64.b64encode(b"\x89PNG but not really").decode()
    refused(connector, data, mode, "not an image Pillow can decode")


@pytest.mark.parametrize("mode", MODES)
def test_bad_scheme(mode: str) -> None:
    connector = MediaConnector.create()
    for url in ("ftp://127.0.0.1/a.png", "gopher://x", "just-a-name.png", "s3://bucket/a.png"):
        refused(connector, url, mode, "is not allowed", "data:image/...;base64", "--allowed-local-media-path")


@pytest.mark.parametrize("mode", MODES)
def test_data_urls(pil: Any, mode: str) -> None:
    connector = MediaConnector.create(max_bytes=4096)
    b64 = base64.b64encode(png_bytes((5, 7), (1, 2, 3))).decode()
    image = load(connector, f"data:image/png;base64,{b64}", mode)
    assert image.size == (5, 7) and image.getpixel((4, 6)) == (1, 2, 3)
    refused(connector, f"data:image/png,{b64}", mode, "not base64")
    refused(connector, f"data:text/plain;base64,{b64}", mode, "'text/plain' is not an image type")
    refused(connector, "data:image/png;base64,@@not base64@@", mode, "not valid base64")
    big = base64.b64encode(b"\0" * 8000).decode()
    refused(connector, f"data:image/png;base64,{big}", mode, "more than the limit of 4096")


@pytest.fixture
def media_dirs(tmp_path: Path, pil: Any) -> tuple[Path, Path]:
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "in.png").write_bytes(png_bytes((3, 4), (9, 9, 9)))
    (outside / "out.png").write_bytes(png_bytes())
    (allowed / "sub").mkdir()
    os.symlink(outside / "out.png", allowed / "link.png")
    return allowed, outside


@pytest.mark.parametrize("mode", MODES)
def test_file_urls_only_under_the_allowed_directory(media_dirs: tuple[Path, Path], mode: str) -> None:
    allowed, outside = media_dirs
    connector = MediaConnector.create(allowed)
    assert load(connector, f"file://{allowed}/in.png", mode).size == (3, 4)
    assert load(connector, f"file://{allowed}/sub/../in.png", mode).size == (3, 4)
    refused(connector, f"file://{outside}/out.png", mode, "outside the allowed directory", str(allowed))
    refused(connector, f"file://{allowed}/../outside/out.png", mode, "outside the allowed directory")
    refused(connector, f"file://{allowed}/link.png", mode, "outside the allowed directory")  # a symlink escape
    refused(connector, f"file://{allowed}/missing.png", mode, "does not exist")
    refused(connector, f"file://{outside}/missing.png", mode, "outside the allowed directory")  # no probing outside
    refused(connector, f"file://{allowed}/sub", mode, "not a regular file")
    refused(connector, f"file://otherhost{allowed}/in.png", mode, "'otherhost'")
    refused(MediaConnector.create(), f"file://{allowed}/in.png", mode, "--allowed-local-media-path DIR")
    refused(MediaConnector.create(allowed, max_bytes=10), f"file://{allowed}/in.png", mode, "more than the limit of 10")


def test_connector_options_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_IMAGE_FETCH_TIMEOUT", "0.25")
    monkeypatch.setenv("VLLM_IMAGE_FETCH_MAX_BYTES", "1234")
    c = MediaConnector.create()
    assert (c.fetch_timeout, c.max_bytes, c.allowed_local_media_path) == (0.25, 1234, None)
    c = MediaConnector.create(tmp_path, fetch_timeout=3, max_bytes=99)
    assert (c.fetch_timeout, c.max_bytes, c.allowed_local_media_path) == (3, 99, tmp_path.resolve())
    monkeypatch.setenv("VLLM_IMAGE_FETCH_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="VLLM_IMAGE_FETCH_TIMEOUT"):
        MediaConnector.create()
    with pytest.raises(ValueError, match="not a directory"):
        MediaConnector.create(tmp_path / "nope", fetch_timeout=1)


def test_async_fetch_does_not_block_the_event_loop(http: MediaHTTPServer) -> None:
    connector = MediaConnector.create(fetch_timeout=1.0)

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        task = asyncio.ensure_future(ticker())
        with pytest.raises(MediaError, match="timed out"):
            await connector.load_image_async(http.url("/slow"), PART)
        task.cancel()
        return ticks

    assert asyncio.run(main()) >= 10  # the loop kept running through the whole second


def test_missing_pillow_names_the_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    from vllm_core.multimodal.media import decode_image

    monkeypatch.setitem(sys.modules, "PIL", None)  # `from PIL import Image` now raises ImportError
    with pytest.raises(MediaError, match=r"pip install \./plugins/vllm-multimodal") as info:
        decode_image(b"\x89PNG", PART)
    assert PART in str(info.value)


def test_text_only_paths_never_import_pillow() -> None:
    code = ("import sys; import vllm_core.multimodal.media, vllm_core.multimodal.content_parts, "
            "vllm_core.entrypoints.llm, vllm_core.entrypoints.openai.api_server; "
            "from vllm_core.multimodal.content_parts import parse_chat_content; "
            "parse_chat_content([{'role': 'user', 'content': [{'type': 'text', 'text': 'hi'}]}]); "
            "assert 'PIL' not in sys.modules, 'PIL imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("mode", MODES)
def test_allowed_media_domains(http: MediaHTTPServer, mode: str) -> None:
    connector = MediaConnector.create(allowed_media_domains=["127.0.0.1"])
    assert load(connector, http.url("/red.png"), mode).size == (8, 6)
    refused(connector, http.url("/redirect"), mode, "redirect (HTTP 302)", "--allowed-media-domains")
    other = MediaConnector.create(allowed_media_domains=["images.example.test"])
    hits = http.hits.get("/red.png", 0)
    refused(other, http.url("/red.png"), mode, "host '127.0.0.1'", "images.example.test")
    assert http.hits.get("/red.png", 0) == hits  # refused before any request


@pytest.mark.parametrize("mode", MODES)
def test_decompression_bomb_is_refused_before_decoding(pil: Any, mode: str) -> None:
    import io

    buf = io.BytesIO()
    pil.new("L", (9000, 8000)).save(buf, format="PNG")  # 72 Mpx of zeros: a few dozen kilobytes
    assert len(buf.getvalue()) < 200_000
    refused(MediaConnector.create(), "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), mode,
            "9000x8000 pixels, more than the limit")
