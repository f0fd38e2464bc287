"""The vllm-cpu C kernels, built once per test module for the tests that call them directly."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.conftest import import_or_require, require_or_skip


@pytest.fixture(scope="module")
def kernels() -> Any:
    """The loaded kernels. A CPU without the flags they need skips (naming the flags) unless the
    session requires ``cpu-kernels``; a failed build on a CPU that has them fails."""
    import_or_require("vllm_cpu", "cpu")
    from vllm_cpu.kernels import REQUIRED_CPU_FLAGS, cpu_flags, load_kernels

    missing = [f for f in REQUIRED_CPU_FLAGS if f not in cpu_flags()]
    if missing:
        require_or_skip("cpu-kernels", f"this CPU lacks {missing}")
    k = load_kernels(len(os.sched_getaffinity(0)))
    assert k is not None, "the kernels must build on a CPU with AVX-512 BF16 / VNNI and a C compiler"
    return k
