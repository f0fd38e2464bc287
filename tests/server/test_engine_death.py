"""Engine death is never a hang: when the engine-core process dies, every open stream ends with an
error event at once, later requests get a 503 with OpenAI's error body, and ``/health`` turns 503.
Everything runs for real: a server on the tiny model, its core process killed with SIGKILL."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from tests.server.conftest import TINY_ENGINE, start_server

NUM_STREAMS = 8
END_WITHIN_S = 5.0


class _Stream(threading.Thread):
    """One streaming completion, read line by line; records when it ended and what it got."""

    def __init__(self, url: str, index: int) -> None:
        super().__init__(name=f"stream-{index}", daemon=True)
        self.url = url
        self.index = index
        self.first_chunk = threading.Event()
        self.data: list[str] = []
        self.status: int | None = None
        self.ended_at: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        body = {"prompt": f"Story number {self.index}:", "max_tokens": 230, "ignore_eos": True,
                "temperature": 0.0, "stream": True}
        try:
            with httpx.stream("POST", f"{self.url}/v1/completions", json=body, timeout=60) as r:
                self.status = r.status_code
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        self.data.append(line.removeprefix("data: "))
                        self.first_chunk.set()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            self.first_chunk.set()

    def error_event(self) -> dict[str, Any] | None:
        for d in self.data:
            if d != "[DONE]" and "error" in (obj := json.loads(d)):
                return obj  # type: ignore[no-any-return]
        return None


def test_killed_engine_ends_every_open_stream_then_503s(tiny_chat_model: str) -> None:
    srv = start_server(tiny_chat_model, TINY_ENGINE)
    try:
        streams = [_Stream(srv.url, i) for i in range(NUM_STREAMS)]
        for s in streams:
            s.start()
        for s in streams:
            assert s.first_chunk.wait(120), f"stream {s.index} got no chunk"
        assert all(s.ended_at is None for s in streams), "a stream ended before the kill: make it longer"

        proc = srv.engine.client.proc
        killed_at = time.monotonic()
        proc.kill()
        for s in streams:
            s.join(max(0.0, killed_at + END_WITHIN_S - time.monotonic()))
        hung = [s.index for s in streams if s.is_alive()]
        assert not hung, f"streams {hung} still open {END_WITHIN_S}s after the engine died"
        for s in streams:
            assert s.error is None, (s.index, s.error)
            assert s.status == 200 and s.ended_at is not None
            assert s.ended_at - killed_at < END_WITHIN_S
            err = s.error_event()
            assert err is not None, (s.index, s.data[-3:])
            assert err["error"]["code"] == 503 and "died" in err["error"]["message"], err
            assert s.data[-1] == "[DONE]", (s.index, s.data[-3:])
            assert len(s.data) >= 3, "text chunks, then the error event, then [DONE]"

        engine = srv.engine
        assert not engine.is_running and "died" in (engine.dead_reason or "")
        assert engine.streams == {}, "no request may be left waiting on the dead core"

        started = time.monotonic()
        r = httpx.post(f"{srv.url}/v1/completions", json={"prompt": "hi", "max_tokens": 4}, timeout=30)
        assert r.status_code == 503, r.text
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert err["code"] == 503 and err["type"] == "ServiceUnavailableError" and "died" in err["message"]
        r = httpx.post(f"{srv.url}/v1/completions", json={"prompt": "hi", "max_tokens": 4, "stream": True},
                       timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == 503, r.text
        r = httpx.post(f"{srv.url}/v1/chat/completions",
                       json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == 503, r.text
        assert time.monotonic() - started < 5, "requests after the death must fail fast"

        r = httpx.get(f"{srv.url}/health", timeout=30)
        assert r.status_code == 503 and "died" in r.json()["error"]["message"]
        assert engine.streams == {}
        assert not engine.client._reader.is_alive(), "the reader thread must have stopped"
    finally:
        srv.stop()


@pytest.fixture()
def core_client(tiny_chat_model: str) -> Any:
    from vllm_core.engine.core_client import CoreClient
    from vllm_core.entrypoints.llm import build_engine_config

    messages: list[tuple[Any, ...]] = []
    client = CoreClient(build_engine_config(tiny_chat_model, **TINY_ENGINE), messages.append)
    client.start(300)
    client.messages = messages  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        client.shutdown()
    assert not client.proc.is_alive()


def _wait_dead(client: Any, within: float) -> list[tuple[Any, ...]]:
    deadline = time.monotonic() + within
    while client.dead_reason is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # a second "dead" would come now
    return [m for m in client.messages if m[0] == "dead"]


def test_core_client_marks_itself_dead_when_the_output_queue_breaks(core_client: Any) -> None:
    """The process is still alive, but its output queue is gone: the reader's ``get`` raises
    OSError. The client must say so (not just stop reading) and refuse new work."""
    from vllm_core.engine.core_client import EngineDeadError

    assert core_client.is_alive and core_client.dead_reason is None
    core_client.out_q._reader.close()
    dead = _wait_dead(core_client, 5)
    assert core_client.proc.is_alive(), "the process itself is fine"
    assert not core_client.is_alive
    assert "output queue failed" in (core_client.dead_reason or "") and "OSError" in core_client.dead_reason
    assert dead == [("dead", core_client.dead_reason)], "exactly one dead message"
    with pytest.raises(EngineDeadError, match="output queue failed"):
        core_client.call("stats")
    core_client._reader.join(5)
    assert not core_client._reader.is_alive()


def test_core_client_marks_itself_dead_on_eof_when_the_process_dies(core_client: Any) -> None:
    """Once the core is killed nothing holds the output pipe's write end: the reader gets EOF
    at once (it never blocks on a half-written message) and reports the death."""
    killed_at = time.monotonic()
    core_client.proc.kill()
    dead = _wait_dead(core_client, 5)
    assert core_client.dead_reason is not None and time.monotonic() - killed_at < 3
    assert not core_client.is_alive and "died" in core_client.dead_reason
    assert dead == [("dead", core_client.dead_reason)], "exactly one dead message"
    core_client._reader.join(5)
    core_client._watcher.join(5)
    assert not core_client._reader.is_alive() and not core_client._watcher.is_alive()
    # The pipe of a dead core reads as EOF at once: no reader can block on it.
    pipe = core_client.out_q._reader
    assert pipe.poll(1), "the write end must be closed everywhere once the core is gone"
    with pytest.raises(EOFError):
        while True:
            pipe.recv_bytes()
