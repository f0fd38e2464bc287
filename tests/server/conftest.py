"""A real server per fixture: the engine core in its own process, uvicorn on 127.0.0.1 with a
free port (in a thread of the test process), and the official ``openai`` client."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.server.models import save_tiny_chat_model

TINY_ENGINE = {"max_model_len": 256, "num_gpu_blocks_override": 96, "block_size": 16, "max_num_seqs": 32}


@dataclass
class RunningServer:
    url: str
    engine: Any
    model: str
    thread: threading.Thread
    server: Any
    loop: asyncio.AbstractEventLoop

    def client(self, api_key: str = "unused", **kw: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=120, **kw)

    def async_client(self, api_key: str = "unused", **kw: Any) -> Any:
        import openai

        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=120, **kw)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)


def start_server(model: str, engine_kwargs: dict[str, Any], served_name: str = "test-model",
                 api_key: str | None = None, **settings: Any) -> RunningServer:
    import uvicorn

    from vllm_core.engine.async_llm import AsyncLLM
    from vllm_core.entrypoints.llm import build_engine_config
    from vllm_core.entrypoints.openai.api_server import build_app
    from vllm_core.entrypoints.openai.serving_engine import ServerSettings

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        try:
            engine = await AsyncLLM.create(build_engine_config(model, **engine_kwargs))
            app = build_app(engine, ServerSettings(served_model_names=(served_name,), **settings), api_key=api_key)
            server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
            box.update(engine=engine, server=server, loop=asyncio.get_running_loop())
        except BaseException as exc:
            box["error"] = exc
            ready.set()
            raise
        ready.set()
        try:
            await server.serve(sockets=[sock])
        finally:
            await engine.shutdown()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    ready.wait(600)
    if "error" in box:
        raise box["error"]
    srv = box["server"]
    while not srv.started:
        thread.join(0.05)
    return RunningServer(f"http://127.0.0.1:{port}", box["engine"], served_name, thread, srv, box["loop"])


@pytest.fixture(scope="session")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_chat_model(str(tmp_path_factory.mktemp("tiny-chat")))


@pytest.fixture(scope="session")
def server(tiny_chat_model: str) -> Iterator[RunningServer]:
    """The shared server: tiny chat model, hermes tool parser with auto tool choice."""
    srv = start_server(tiny_chat_model, TINY_ENGINE, enable_auto_tool_choice=True, tool_call_parser="hermes")
    yield srv
    srv.stop()


def engine_stats(srv: RunningServer) -> Any:
    """The core's stats, read through the server's own event loop."""
    return asyncio.run_coroutine_threadsafe(srv.engine.get_stats(), srv.loop).result(30)


def read_metrics(url: str) -> dict[str, float]:
    """``/metrics`` as name{labels} -> value (label part dropped when there is one series)."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=30).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
        out.setdefault(name.split("{")[0], float(value))
    return out


def _path(p: str) -> Path:
    return Path(p)
