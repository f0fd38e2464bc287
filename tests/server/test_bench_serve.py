"""``vllm-core bench serve`` against a real test server: it runs, counts every token and saves JSON."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from tests.server.conftest import RunningServer
from vllm_core.entrypoints.cli.main import cli


def test_bench_serve_writes_its_result(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "serve.json"
    result = CliRunner().invoke(cli, [
        "bench", "serve", "--base-url", server.url, "--num-prompts", "12", "--random-input-len", "16",
        "--random-output-len", "8", "--request-rate", "30", "--max-concurrency", "6", "--save-result", str(out),
    ])
    assert result.exit_code == 0, result.output
    res = json.loads(out.read_text())
    assert res["benchmark"] == "serve" and res["model"] == server.model
    assert res["completed"] == 12 and res["failed"] == 0
    assert res["total_input_tokens"] == 12 * 16 and res["total_output_tokens"] == 12 * 8
    assert res["output_throughput"] > 0 and res["request_throughput"] > 0
    assert 0 < res["mean_ttft_ms"] <= res["mean_e2el_ms"] and res["mean_tpot_ms"] > 0 and res["p99_itl_ms"] > 0
    assert res["args"]["request_rate"] == 30
    assert "Output token throughput (tok/s)" in result.output and "P99 TTFT (ms)" in result.output


def test_bench_serve_without_a_tokenizer(tmp_path: Path) -> None:
    """Dummy weights and no tokenizer: the stream has token ids but no text, and TTFT / ITL are
    still measured (they read 0 when only text counted)."""
    from transformers import LlamaConfig

    from tests.server.conftest import TINY_ENGINE, start_server

    model = tmp_path / "no-tokenizer"
    LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=512).save_pretrained(model)
    srv = start_server(str(model), {**TINY_ENGINE, "load_format": "dummy"})
    try:
        assert srv.engine.tokenizer is None
        out = tmp_path / "serve.json"
        result = CliRunner().invoke(cli, [
            "bench", "serve", "--base-url", srv.url, "--num-prompts", "6", "--random-input-len", "8",
            "--random-output-len", "6", "--random-vocab-size", "512", "--save-result", str(out)])
        assert result.exit_code == 0, result.output
        res = json.loads(out.read_text())
        assert res["completed"] == 6 and res["total_output_tokens"] == 36
        assert 0 < res["mean_ttft_ms"] <= res["mean_e2el_ms"] and res["mean_itl_ms"] > 0 and res["mean_tpot_ms"] > 0
    finally:
        srv.stop()
