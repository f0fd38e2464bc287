"""``vllm-core bench throughput`` and ``bench latency``, run for real on a tiny random-weight model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from vllm_core.benchmarks.datasets import RandomDataset, length_range
from vllm_core.benchmarks.report import percentile
from vllm_core.entrypoints.cli.main import cli

TINY = str(Path(__file__).resolve().parents[2] / "benchmarks" / "configs" / "tiny-llama")
ENGINE = ["--model", TINY, "--load-format", "dummy", "--max-model-len", "64"]


def bench(tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    out = tmp_path / "result.json"
    result = CliRunner().invoke(cli, ["bench", *args, *ENGINE, "--save-result", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.output


def test_throughput_counts_every_token(tmp_path: Path) -> None:
    res, printed = bench(tmp_path, "throughput", "--num-prompts", "8", "--input-len", "16", "--output-len", "8")
    assert res["benchmark"] == "throughput" and res["num_requests"] == 8
    assert res["total_prompt_tokens"] == 8 * 16 and res["total_output_tokens"] == 8 * 8
    assert res["total_num_tokens"] == 8 * 24
    assert res["output_tokens_per_second"] > 0 and res["elapsed_time"] > 0
    assert res["tokens_per_second"] == pytest.approx(res["total_num_tokens"] / res["elapsed_time"])
    env = res["environment"]
    assert env["platform"] and env["device_name"] and env["dtype"] == "float32"
    assert env["engine_start_seconds"] > 0 and env["architecture"] == "LlamaForCausalLM"
    assert res["args"]["num_prompts"] == 8 and res["args"]["dataset"] == "random"
    assert "Output token throughput (tok/s)" in printed and "Engine start (s)" in printed


def test_throughput_length_ranges_and_sampling(tmp_path: Path) -> None:
    """nano-vllm's workload shape (uniform lengths in both ranges, temperature 0.6), scaled down."""
    res, _ = bench(tmp_path, "throughput", "--num-prompts", "6", "--input-len-range", "4", "12",
                   "--output-len-range", "2", "6", "--temperature", "0.6", "--seed", "3")
    expected = RandomDataset((4, 12), (2, 6), seed=3).sample(6, 1024)
    assert res["total_prompt_tokens"] == sum(r.prompt_len for r in expected)
    assert res["total_output_tokens"] == sum(r.expected_output_len for r in expected)
    assert res["args"]["input_len_range"] == [4, 12]


def test_latency_reports_ttft_and_tpot(tmp_path: Path) -> None:
    res, printed = bench(tmp_path, "latency", "--batch-size", "2", "--input-len", "16", "--output-len", "8",
                         "--num-iters-warmup", "1", "--num-iters", "2")
    assert res["benchmark"] == "latency" and res["num_iters"] == 2 and len(res["latencies"]) == 2
    assert res["avg_latency"] == pytest.approx(sum(res["latencies"]) / 2)
    assert 0 < res["ttft"]["mean"] <= res["latency"]["mean"]
    assert res["tpot"]["mean"] > 0 and set(res["percentiles"]) == {"10", "25", "50", "75", "90", "99"}
    assert res["output_tokens_per_second"] > 0
    assert "Mean TTFT (ms)" in printed and "P99 TPOT (ms)" in printed


@pytest.mark.parametrize(
    "args, message",
    [
        (["throughput", "--num-prompts", "0"], "--num-prompts"),
        (["throughput", "--random-range-ratio", "1.0"], "--random-range-ratio"),
        (["throughput", "--input-len", "8", "--input-len-range", "4", "12"], "not both"),
        (["throughput", "--output-len-range", "9", "3"], "1 <= LO <= HI"),
        (["throughput", "--dataset", "sharegpt"], "--dataset"),
        (["latency", "--batch-size", "0"], "--batch-size"),
    ],
)
def test_bad_arguments_are_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["bench", *args, *ENGINE])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_requests_longer_than_the_model_length_fail_before_timing() -> None:
    result = CliRunner().invoke(cli, ["bench", "latency", "--input-len", "60", "--output-len", "8", *ENGINE])
    assert result.exit_code == 1
    assert "needs 68 tokens but max_model_len is 64" in result.output


def test_enforce_eager_is_ignored_with_a_warning_by_engines_without_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from vllm_core.benchmarks import engine
    from vllm_core.errors import ConfigError

    calls: list[dict[str, Any]] = []

    def fake_llm(model: str | None, **kwargs: Any) -> str:
        calls.append(kwargs)
        if "enforce_eager" in kwargs:
            raise ConfigError("unknown engine argument 'enforce_eager'; known: dtype")
        return "llm"

    monkeypatch.setattr(engine, "LLM", fake_llm)
    started = engine.start_engine(TINY, {"dtype": "float32"}, enforce_eager=True)
    assert started.llm == "llm" and started.enforce_eager is None
    assert calls[-1] == {"use_tqdm_on_load": False, "dtype": "float32"}
    assert "--enforce-eager is ignored" in caplog.text


def test_dataset_lengths_and_percentiles() -> None:
    assert length_range(100, 0.5) == (50, 150) and length_range(1, 0.9) == (1, 1)
    reqs = RandomDataset((100, 1024), (100, 1024), seed=0).sample(50, 151936)
    assert all(100 <= r.prompt_len <= 1024 and 100 <= r.expected_output_len <= 1024 for r in reqs)
    assert reqs == RandomDataset((100, 1024), (100, 1024), seed=0).sample(50, 151936)
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5 and percentile([5.0], 99) == 5.0


def test_shipped_configs_are_valid() -> None:
    from transformers import AutoConfig

    root = os.path.dirname(TINY)
    expected = {"qwen3-0.6b": (1024, 28), "llama-3.2-1b": (2048, 16), "llama-3.1-8b": (4096, 32), "tiny-llama": (64, 2)}
    for name, (hidden, layers) in expected.items():
        cfg = AutoConfig.from_pretrained(os.path.join(root, name), local_files_only=True)
        assert (cfg.hidden_size, cfg.num_hidden_layers) == (hidden, layers)
