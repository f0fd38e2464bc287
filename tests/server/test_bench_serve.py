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
