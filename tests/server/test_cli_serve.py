"""``vllm-core serve`` as users run it: a subprocess, the ready log line with the URL, requests
through the ``openai`` client, and a clean exit on SIGTERM / SIGINT with a stream in flight."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        cmd = [sys.executable, "-m", "vllm_core.entrypoints.cli.main", "serve", *args, "--port", str(self.port)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("VLLM_CORE_API_KEY", None)
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "vllm-core serving" in line:
                self.ready.set()

    def wait_ready(self, timeout: float = 300) -> str:
        if not self.ready.wait(timeout):
            self.proc.kill()
            raise AssertionError("server never became ready:\n" + "".join(self.lines))
        return next(line for line in self.lines if "vllm-core serving" in line)

    def client(self, key: str = "x") -> openai.OpenAI:
        return openai.OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture
def serve_args(tiny_chat_model: str) -> list[str]:
    return [tiny_chat_model, "--max-model-len", "256", "--num-gpu-blocks-override", "64",
            "--served-model-name", "tiny", "--api-key", "k1"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_logs_url_answers_and_stops_cleanly(serve_args: list[str], sig: int) -> None:
    srv = ServeProcess(*serve_args)
    try:
        line = srv.wait_ready()
        assert f"http://127.0.0.1:{srv.port}" in line and "tiny" in line
        client = srv.client("k1")
        assert [m.id for m in client.models.list().data] == ["tiny"]
        with pytest.raises(openai.AuthenticationError):
            srv.client("wrong").models.list()
        resp = client.completions.create(model="tiny", prompt="Hello", max_tokens=4, temperature=0)
        assert resp.usage.completion_tokens >= 1

        # A long stream is in flight when the signal arrives: the server ends it and exits 0.
        stream = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Go"}], max_tokens=200, stream=True,
            extra_body={"ignore_eos": True})
        next(iter(stream))
        time.sleep(0.2)
        srv.proc.send_signal(sig)
        try:
            for _ in stream:
                pass
        except openai.APIError:
            pass  # cut off after the grace period: also clean
        assert srv.proc.wait(60) == 0, "".join(srv.lines)
        assert any("server stopped" in ln for ln in srv.lines)
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()


def test_serve_rejects_an_unknown_parser(tiny_chat_model: str) -> None:
    r = subprocess.run([sys.executable, "-m", "vllm_core.entrypoints.cli.main", "serve", tiny_chat_model,
                        "--enable-auto-tool-choice", "--tool-call-parser", "nope"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "unknown tool parser 'nope'" in r.stderr and "hermes" in r.stderr


def test_tool_parser_plugin_file_registers_a_parser(tiny_chat_model: str, tmp_path: Path) -> None:
    plugin = tmp_path / "my_parser.py"
    plugin.write_text(
        "from vllm_core import hookimpl\n"
        "from vllm_core.tool_parsers.hermes import HermesToolParser\n"
        "class Mine(HermesToolParser):\n    pass\n"
        "@hookimpl\n"
        "def register_tool_parsers(register):\n    register('mine', Mine)\n"
    )
    srv = ServeProcess(tiny_chat_model, "--max-model-len", "256", "--num-gpu-blocks-override", "32",
                       "--tool-parser-plugin", str(plugin), "--tool-call-parser", "mine", "--enable-auto-tool-choice")
    try:
        srv.wait_ready()
        tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
        resp = srv.client().chat.completions.create(model=tiny_chat_model, messages=[{"role": "user", "content": "x"}],
                                                   tools=tools, tool_choice="auto", max_tokens=3)
        assert resp.choices[0].message.role == "assistant"
    finally:
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.wait(60)
