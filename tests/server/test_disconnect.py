"""A client that goes away cancels its work: a non-streaming request whose client times out is
aborted in the engine (its KV blocks freed) instead of running to its ``max_tokens``."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.server.conftest import RunningServer, engine_stats, start_server
from tests.server.models import save_tiny_chat_model

LONG = 8000


@pytest.fixture(scope="module")
def long_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    model = save_tiny_chat_model(str(tmp_path_factory.mktemp("tiny-long")), max_position_embeddings=LONG + 192)
    srv = start_server(model, {"max_model_len": LONG + 192, "num_gpu_blocks_override": 1100, "block_size": 16,
                               "max_num_seqs": 8})
    yield srv
    srv.stop()


def _wait_running(srv: RunningServer, want: int, within: float) -> float:
    """Seconds until the engine runs exactly ``want`` requests (fails after ``within``)."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        stats = engine_stats(srv)
        if stats.num_running + stats.num_waiting == want:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"the engine still runs {stats.num_running} (+{stats.num_waiting} waiting) requests "
                         f"{within}s later; wanted {want}")


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_client_timeout_aborts_the_request(long_server: RunningServer, path: str) -> None:
    body = {"model": long_server.model, "max_tokens": LONG, "ignore_eos": True, "temperature": 0}
    body.update({"prompt": "hello"} if "chat" not in path else {"messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{long_server.url}{path}", json=body, timeout=httpx.Timeout(60, read=1.0))
    # The client is gone; its request must leave the engine long before LONG tokens are made.
    _wait_running(long_server, 0, within=5.0)
    # And the server still serves.
    ok = httpx.post(f"{long_server.url}/v1/completions", json={"prompt": "hi", "max_tokens": 3}, timeout=60)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3


def test_the_request_would_have_run_on(long_server: RunningServer) -> None:
    """The control: the same request from a patient client is still running when the test above
    has already seen its abort, so that test measures the abort and not a fast model."""
    import threading

    body = {"model": long_server.model, "prompt": "hello", "max_tokens": LONG, "ignore_eos": True}

    def call() -> None:
        with pytest.raises(httpx.ReadTimeout):  # leaves after the check below (and is aborted)
            httpx.post(f"{long_server.url}/v1/completions", json=body, timeout=httpx.Timeout(60, read=7.5))

    t = threading.Thread(target=call, daemon=True)
    t.start()
    time.sleep(6.5)
    assert engine_stats(long_server).num_running == 1, "the control request finished too soon to show anything"
    t.join(30)
    _wait_running(long_server, 0, within=5.0)
