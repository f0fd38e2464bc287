"""Batched bfloat16 linears on our kernel or oneDNN's matmul (``vllm_cpu.amx``): both paths are
exact to bfloat16 rounding, the per-shape choice keeps the faster timed path, ``force`` runs
oneDNN on any CPU (so this machine, without AMX, covers that path), and recorded decode plans
replay a oneDNN linear through ``vc_callback``."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from tests.conftest import import_or_require, random_prompts

import_or_require("vllm_cpu", "cpu")

from vllm_core import LLM, SamplingParams  # noqa: E402
from vllm_core.errors import ConfigError  # noqa: E402
from vllm_cpu.amx import (  # noqa: E402
    ENV_AMX,
    MIN_ROWS,
    ONEDNN,
    OURS,
    LinearDispatch,
    amx_mode_from_env,
    row_class,
)
from vllm_cpu.ops import CPUOps  # noqa: E402
from vllm_cpu.plan import record  # noqa: E402


def _never() -> None:
    raise AssertionError("timed a path that needed no timing")


def test_mode_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_AMX, raising=False)
    assert amx_mode_from_env() == "auto"
    for mode in ("off", "force", "AUTO"):
        monkeypatch.setenv(ENV_AMX, mode)
        assert amx_mode_from_env() == mode.lower()
    monkeypatch.setenv(ENV_AMX, "on")
    with pytest.raises(ConfigError, match=r"VLLM_CPU_AMX='on' is not one of auto, off, force"):
        amx_mode_from_env()
    monkeypatch.setenv(ENV_AMX, "auto")
    d = LinearDispatch.from_env()
    from vllm_cpu.kernels import amx_unavailable

    assert d.amx == (amx_unavailable() is None) and d.active == d.amx


def test_row_classes() -> None:
    assert [row_class(r) for r in (8, 9, 15, 16, 63, 64, 255, 256, 4096)] == [8, 8, 8, 16, 32, 64, 128, 256, 256]


def test_selection_keeps_the_faster_path_per_shape_and_row_class() -> None:
    d = LinearDispatch("auto", amx=True)

    def slow() -> None:
        time.sleep(0.002)

    def fast() -> None:
        pass

    assert d.choose(96, 64, MIN_ROWS - 1, {OURS: _never, ONEDNN: _never}) == OURS  # single rows: never timed
    assert d.choose(96, 64, 16, {OURS: slow, ONEDNN: fast}) == ONEDNN
    assert d.timings[(96, 64, 16)][OURS] > d.timings[(96, 64, 16)][ONEDNN]
    assert d.choose(96, 64, 31, {OURS: _never, ONEDNN: _never}) == ONEDNN  # same class: kept
    assert d.choose(96, 64, 64, {OURS: fast, ONEDNN: slow}) == OURS  # another class: timed again
    assert d.choose(64, 96, 16, {OURS: fast, ONEDNN: slow}) == OURS  # another shape
    assert sorted(d.choices) == [(64, 96, 16), (96, 64, 16), (96, 64, 64)]
    # without AMX, auto never times and never picks oneDNN; off likewise; force always oneDNN
    assert LinearDispatch("auto", amx=False).choose(96, 64, 64, {OURS: _never, ONEDNN: _never}) == OURS
    assert LinearDispatch("off", amx=True).choose(96, 64, 64, {OURS: _never, ONEDNN: _never}) == OURS
    assert LinearDispatch("force").choose(96, 64, 64, {OURS: _never, ONEDNN: _never}) == ONEDNN
    assert LinearDispatch("force").choose(96, 64, 7, {OURS: _never, ONEDNN: _never}) == OURS
    with pytest.raises(ConfigError, match="not one of auto, off, force"):
        LinearDispatch("always")


def _reference(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    y = x.double() @ w.double().t()
    return y if b is None else y + b.double()


@pytest.mark.parametrize("rows", [1, 8, 33, 300])
@pytest.mark.parametrize("shape", [(96, 64), (200, 576)])
@pytest.mark.parametrize("bias", [False, True])
def test_both_paths_are_exact_to_bf16_rounding(kernels: Any, rows: int, shape: tuple[int, int], bias: bool) -> None:
    """Each path sums bf16 products in float32 and rounds once to bf16: within one bf16 step
    (2^-8 relative) plus float32 summation error of the float64 result."""
    n, k = shape
    g = torch.Generator().manual_seed(rows * 7 + n)
    x = torch.randn(rows, k, generator=g).bfloat16()
    w = (torch.randn(n, k, generator=g) / k**0.5).bfloat16()
    b = torch.randn(n, generator=g).bfloat16() if bias else None
    ref = _reference(x, w, b)
    tol = ref.abs() * 2.0**-8 + 1e-5 * (x.double().abs() @ w.double().abs().t())
    outs = {}
    for mode in ("off", "force"):
        ops = CPUOps(kernels)
        ops.dispatch = LinearDispatch(mode)
        with torch.inference_mode():
            outs[mode] = ops.linear(x, w, b)
        assert outs[mode].dtype == torch.bfloat16 and outs[mode].shape == (rows, n)
        err = (outs[mode].double() - ref).abs()
        assert bool((err <= tol).all()), f"{mode}: max error {float((err - tol).max())} over the bound"
    if rows < MIN_ROWS:  # force leaves single rows and small batches on our kernel
        assert torch.equal(outs["off"], outs["force"])


def test_timed_choice_inside_the_ops(kernels: Any) -> None:
    """``auto`` with AMX usable (forced true here) times both paths on the first call of a shape
    and row class, records both times, keeps the faster, and gives the same values as the path
    it chose."""
    ops = CPUOps(kernels)
    ops.dispatch = LinearDispatch("auto", amx=True)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 576, generator=g).bfloat16()
    w = (torch.randn(960, 576, generator=g) / 24).bfloat16()
    with torch.inference_mode():
        y = ops.linear(x, w)
        key = (960, 576, 64)
        times = ops.dispatch.timings[key]
        assert set(times) == {OURS, ONEDNN} and all(t > 0 for t in times.values())
        assert ops.dispatch.choices[key] == min(times, key=times.__getitem__)
        ops.linear(x[:100], w)  # same class: no second timing
        assert len(ops.dispatch.timings) == 1
        other = CPUOps(kernels)
        other.dispatch = LinearDispatch("force" if ops.dispatch.choices[key] == ONEDNN else "off")
        assert torch.equal(y, other.linear(x, w))


@pytest.mark.parametrize("rows", [16, 64])
def test_recorded_plan_replays_a_onednn_linear(kernels: Any, rows: int) -> None:
    """On the pool (16 rows: output columns split over the threads; 64: rows split), inside a
    replayed plan as eagerly."""
    kernels.set_pool_mode("pool")
    try:
        ops = CPUOps(kernels)
        ops.dispatch = LinearDispatch("force")
        g = torch.Generator().manual_seed(5)
        x = torch.randn(rows, 64, generator=g).bfloat16()
        w, b = torch.randn(512, 64, generator=g).bfloat16(), torch.randn(512, generator=g).bfloat16()
        norm = torch.ones(512, dtype=torch.bfloat16)
        with torch.inference_mode():
            jobs = kernels.pool_stats()["jobs"]
            ops.linear(x, w, b)
            assert kernels.pool_stats()["jobs"] > jobs  # the matmul ran in chunks on the pool
            plan = record(ops, lambda: ops.rms_norm(ops.linear(x, w, b), norm, 1e-6))
            assert plan.num_calls == 2 and len(plan._callbacks) == 1
            assert ops.take_callbacks() == []
            x.copy_(torch.randn(rows, 64, generator=g))
            want = ops.rms_norm(ops.linear(x, w, b), norm, 1e-6)
            assert not torch.equal(plan.output, want)
            assert torch.equal(plan.run(), want)
            ref = _reference(x, w, b)
            assert bool(((ops.linear(x, w, b).double() - ref).abs() <= ref.abs() * 2.0**-8 + 1e-3).all())
            # a callback's failure cannot raise through C: the replay raises it when it returns
            w.resize_(512, 32)
            with pytest.raises(RuntimeError, match="a Python callback failed"):
                plan.run()
    finally:
        kernels.set_pool_mode("auto")


def test_engine_plans_with_onednn_linears_match_eager(
    monkeypatch: pytest.MonkeyPatch, tiny_models: Any, kernels: Any
) -> None:
    """With ``VLLM_CPU_AMX=force`` (bfloat16): every decode bucket is still captured (the
    batched buckets call oneDNN through ``vc_callback``) and greedy output equals eager's."""
    from vllm_cpu.graph_runner import DEFAULT_MAX_BATCH, plan_sizes

    monkeypatch.setenv(ENV_AMX, "force")
    path, _ = tiny_models["llama"]
    kw: dict[str, Any] = dict(device="cpu", dtype="bfloat16", max_model_len=256, num_gpu_blocks_override=32,
                              block_size=16, use_tqdm_on_load=False, skip_tokenizer_init=True, seed=0)
    prompts = random_prompts(10, 3, 30, 512, seed=11)
    params = [SamplingParams(temperature=0, max_tokens=3 + 2 * i, ignore_eos=True) for i in range(10)]
    inputs = [{"prompt_token_ids": p} for p in prompts]
    llm = LLM(path, **kw)
    runner = llm.llm_engine.core.runner
    assert runner.graph_runner.captured_sizes == plan_sizes(256, DEFAULT_MAX_BATCH)
    assert any(p._callbacks for p in runner.graph_runner.plans.values())
    got = [o.outputs[0].token_ids for o in llm.generate(inputs, params, use_tqdm=False)]
    assert len(runner.graph_runner.recorded_sizes) > 1  # the batch shrank through smaller buckets
    eager = LLM(path, enforce_eager=True, **kw)
    assert got == [o.outputs[0].token_ids for o in eager.generate(inputs, params, use_tqdm=False)]
