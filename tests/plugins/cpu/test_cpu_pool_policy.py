"""``VLLM_CPU_POOL``: where work runs (auto / pool / alone) and how idle threads wait (spin /
yield / passive). The setting is parsed with errors that name the value and the choices, and
the kernels' results are bit-identical under every policy (waiting never changes the chunks'
arithmetic)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from tests.conftest import import_or_require
from vllm_core.errors import ConfigError

import_or_require("vllm_cpu", "cpu")

from vllm_cpu.kernels import POOL_WAITS, Kernels, cpu_flags, parse_pool_env  # noqa: E402
from vllm_cpu.ops import CPUOps  # noqa: E402
from vllm_cpu.quant import FILE_BLOCK_BYTES, attach, build_quant_weight  # noqa: E402


@pytest.mark.parametrize(("raw", "expected"), [
    ("", ("auto", "yield")), ("yield", ("auto", "yield")), ("spin", ("auto", "spin")),
    ("passive", ("auto", "passive")), ("pool", ("pool", "yield")), (" Alone , PASSIVE ", ("alone", "passive")),
    ("spin,pool", ("pool", "spin")),
])
def test_pool_env_parsed(raw: str, expected: tuple[str, str]) -> None:
    assert parse_pool_env(raw) == expected


@pytest.mark.parametrize(("raw", "message"), [
    ("busy", r"'busy' is not a pool setting; give at most one of auto, pool, alone and one of spin, yield, passive"),
    ("spin,yield", r"'yield' is a second value of the same kind"),
    ("auto,pool", r"'pool' is a second value of the same kind"),
])
def test_bad_pool_env_is_a_clear_error(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"VLLM_CPU_POOL='{raw}': {message}"):
        parse_pool_env(raw)


@pytest.fixture
def pooled(kernels: Kernels) -> Iterator[Kernels]:
    kernels.set_pool_mode("pool")  # every job on the pool, so the waits are exercised
    yield kernels
    kernels.set_pool_mode("auto")
    kernels.set_pool_wait("yield")


def test_unknown_wait_policy_refused(kernels: Kernels) -> None:
    with pytest.raises(ConfigError, match="'sleepy' is not one of spin, yield, passive"):
        kernels.set_pool_wait("sleepy")


def test_results_identical_across_policies(pooled: Kernels) -> None:
    ops = CPUOps(pooled)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(37, 576, generator=g)
    w = torch.randn(1000, 576, generator=g)
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (200, 18 * FILE_BLOCK_BYTES["Q4_1"]), dtype=np.uint8)
    raw.reshape(200, 18, 20)[:, :, 0:4] = np.array([0.01, -0.05], np.float16).view(np.uint8)
    wq = torch.zeros(()).expand(200, 576)
    attach(wq, build_quant_weight([("Q4_1", raw)], 576))
    outs = {}
    for policy in POOL_WAITS:
        pooled.set_pool_wait(policy)
        ys = []
        for _ in range(3):  # idle between jobs: the workers go through their wait each time
            ys.append((ops.linear(x, w), ops.linear(x, wq), ops.rms_norm(x, torch.ones(576), 1e-5)))
        outs[policy] = ys
        before = pooled.pool_stats()["jobs"]
        ops.linear(x, w)
        assert pooled.pool_stats()["jobs"] > before  # it ran on the pool
    ref = outs["spin"][0]
    for policy, ys in outs.items():
        for y in ys:
            for a, b in zip(y, ref):
                assert torch.equal(a, b), policy


def test_amx_detection_names_the_reason() -> None:
    """AMX needs the CPU flags and the kernel's tile-state permission; where either is missing
    the reason names it (this development machine, a Zen 4, has no AMX)."""
    from vllm_cpu.kernels import AMX_CPU_FLAGS, amx_unavailable

    why = amx_unavailable()
    if any(f not in cpu_flags() for f in AMX_CPU_FLAGS):
        assert why is not None and why.startswith("this CPU lacks amx_")
    else:
        assert why is None or "arch_prctl" in why
