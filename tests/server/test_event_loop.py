"""The event loop never blocks: tokenizing and templating a multi-megabyte prompt run on the
tokenizer thread, so ``/health`` (and every other client) keeps answering meanwhile; a text far
too long for the model is refused before it is tokenized at all."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from tests.server.conftest import RunningServer

BIG = "The quick brown fox jumps over the lazy dog. " * 50_000  # ~2.3 MB, ~500k tokens


def _health_latencies(url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            start = time.monotonic()
            assert client.get(f"{url}/health").status_code == 200
            out.append(time.monotonic() - start)
            time.sleep(0.02)


@pytest.fixture(scope="module")
def tokenize_s(tiny_chat_model: str) -> float:
    """How long tokenizing BIG takes here: what a blocked event loop would stall for."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_chat_model)
    start = time.monotonic()
    tok.encode(BIG)
    took = time.monotonic() - start
    assert took > 0.3, f"tokenizing {len(BIG) / 1e6:.1f} MB took only {took:.2f}s: the test would show nothing"
    return took


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_a_huge_prompt_does_not_stall_health(server: RunningServer, path: str, tokenize_s: float) -> None:
    body: dict[str, Any] = {"model": server.model, "max_tokens": 2, "truncate_prompt_tokens": 32}
    body.update({"prompt": BIG} if "chat" not in path else {"messages": [{"role": "user", "content": BIG}]})
    stop, latencies = threading.Event(), []
    poller = threading.Thread(target=_health_latencies, args=(server.url, stop, latencies), daemon=True)
    poller.start()
    time.sleep(0.2)
    start = time.monotonic()
    r = httpx.post(f"{server.url}{path}", json=body, timeout=120)
    took = time.monotonic() - start
    stop.set()
    poller.join(30)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == 32
    # Blocked, the loop would stall /health for the whole tokenization (~tokenize_s); off the loop,
    # /health keeps answering in a small fraction of it.
    assert len(latencies) > 5 and max(latencies) < tokenize_s / 3, (
        f"/health stalled {max(latencies):.2f}s while a {len(BIG) / 1e6:.1f} MB prompt was tokenized "
        f"(request {took:.2f}s, tokenizing alone {tokenize_s:.2f}s)")


def test_a_text_too_long_is_refused_before_tokenizing(server: RunningServer) -> None:
    start = time.monotonic()
    r = httpx.post(f"{server.url}/v1/completions", json={"prompt": BIG * 2, "max_tokens": 2}, timeout=60)
    assert r.status_code == 400 and "maximum context length" in r.json()["error"]["message"]
    assert time.monotonic() - start < 2.0, "refusing must not tokenize 4.6 MB first"
