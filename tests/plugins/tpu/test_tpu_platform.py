"""The tpu platform's probe, buckets and warm-up plan, and the plugin as an installed package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import import_or_require
from vllm_core.plugins.api import StepShapes

import_or_require("torch_xla", "tpu")
import_or_require("vllm_tpu", "tpu")

from vllm_tpu.platform import TPUPlatform  # noqa: E402
from vllm_tpu.warmup import count_steps, dummy_steps  # noqa: E402


def test_available_on_xla_cpu_only_when_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PJRT_DEVICE", "CPU")
    monkeypatch.setenv("VLLM_TPU_ALLOW_CPU", "1")
    assert TPUPlatform.is_available() is None
    monkeypatch.delenv("VLLM_TPU_ALLOW_CPU")
    reason = TPUPlatform.is_available()
    assert reason is not None and "VLLM_TPU_ALLOW_CPU=1" in reason and "PJRT_DEVICE=CPU" in reason


def test_unavailable_reasons_name_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PJRT_DEVICE", "CUDA")
    reason = TPUPlatform.is_available()
    assert reason is not None and "PJRT_DEVICE=CUDA" in reason
    monkeypatch.delenv("PJRT_DEVICE")
    reason = TPUPlatform.is_available()  # no TPU on this machine
    assert reason is not None and ("libtpu" in reason or "no TPU device" in reason)


def test_unavailable_when_torch_xla_does_not_import() -> None:
    """In a process where torch_xla cannot be imported, the reason says so and names the pins."""
    code = (
        "import sys; sys.modules['torch_xla'] = None\n"
        "from vllm_tpu.platform import TPUPlatform\n"
        "print(TPUPlatform.is_available())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PJRT_DEVICE": "CPU", "VLLM_TPU_ALLOW_CPU": "1"})
    assert "torch-xla does not import" in out.stdout and "torch-xla==2.9.*" in out.stdout, out.stderr


def test_step_shapes_are_vllms_tpu_buckets() -> None:
    shapes = TPUPlatform().step_shapes(max_num_seqs=48, max_num_batched_tokens=512, max_model_len=1000, block_size=16)
    assert shapes.token_buckets == (16, 32, 64, 128, 256, 512)
    assert shapes.request_buckets == (8, 16, 32, 48)
    assert shapes.block_table_buckets == (63,)  # fixed width: ceil(1000 / 16)


def test_bucket_minimums_are_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_TPU_MIN_TOKEN_BUCKET", "64")
    monkeypatch.setenv("VLLM_TPU_MIN_REQUEST_BUCKET", "4")
    shapes = TPUPlatform().step_shapes(max_num_seqs=16, max_num_batched_tokens=256, max_model_len=256, block_size=16)
    assert (shapes.token_buckets, shapes.request_buckets) == ((64, 128, 256), (4, 8, 16))


def test_warm_up_runs_each_reachable_shape_once() -> None:
    """Every dummy step lands on its own shape; shapes with more requests than tokens are skipped;
    each token bucket also gets a step that samples nothing (one unfinished prompt chunk)."""
    shapes = StepShapes((16, 32, 64), (8, 16, 32), (8,))
    seen = []
    for out in dummy_steps(shapes, max_model_len=128, block_size=16, num_blocks=10):
        total, reqs = out.num_scheduled_tokens, len(out.scheduled)
        shape = shapes.select(total, reqs, max(len(s.block_ids) for s in out.scheduled))
        assert shape is not None and all(b < 10 for s in out.scheduled for b in s.block_ids)
        seen.append((shape.num_tokens, shape.num_reqs, all(s.sample for s in out.scheduled)))
    assert len(seen) == len(set(seen)) == count_steps(shapes, 128)
    assert {(t, r) for t, r, sampled in seen if sampled} == {(16, 8), (16, 16), (32, 8), (32, 16), (32, 32),
                                                           (64, 8), (64, 16), (64, 32)}
    assert {(t, r) for t, r, sampled in seen if not sampled} == {(16, 8), (32, 8), (64, 8)}


def test_plugin_declares_its_range_and_loads_light() -> None:
    """The plugin module imports neither torch nor torch-xla (every vllm-core start loads it)."""
    code = "import sys, vllm_tpu.plugin as p; print(p.VLLM_CORE_PLUGIN_API, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == [">=1.1,<2", "False"], out.stderr


def test_persistent_cache_is_written(tmp_path: Path, tiny_models: dict[str, tuple[str, Any]]) -> None:
    """``VLLM_XLA_CACHE_PATH``: an engine start in a fresh process (the cache must be set up before
    the process's first computation) writes its executables there. XLA:CPU cannot load them back
    (its PJRT client does not deserialize executables), so a second start is not faster here."""
    path, _ = tiny_models["llama"]
    cache = tmp_path / "xla-cache"
    code = (
        "from vllm_core import LLM\n"
        f"LLM({path!r}, device='tpu', dtype='float32', skip_tokenizer_init=True, max_model_len=32, "
        "block_size=16, max_num_batched_tokens=16, max_num_seqs=8, num_gpu_blocks_override=4, use_tqdm_on_load=False)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "VLLM_XLA_CACHE_PATH": str(cache)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert len(list(cache.iterdir())) >= 2  # the sampling step and the step that samples nothing
