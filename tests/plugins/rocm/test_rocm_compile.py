"""Compile-only: every shared kernel, with the gfx942 / gfx950 entries and the generic fallback
(on gfx90a), built into AMD code objects on this machine, which has no AMD GPU and no ROCm
(Triton's wheel carries the AMD backend: LLVM's AMDGPU target and a linker). Catches what only a
compiler sees: unsupported options or operations per architecture, and shared memory (LDS) past
what the architecture gives a workgroup.

The kernels must be real JIT functions, so the compiles run in a child process without
``TRITON_INTERPRET`` (``python -m vllm_rocm.compile_check``), once for the module.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import import_or_require, require_or_skip

import_or_require("vllm_rocm", "rocm")
if importlib.util.find_spec("triton.backends.amd") is None:
    require_or_skip("hip-compile", "this triton has no AMD backend (triton.backends.amd)")

ARCHS = {"gfx942": "gfx942", "gfx950": "gfx950", "gfx90a": "amd"}
"""Architecture compiled for -> the table entry ``amd_launch_configs`` gives it."""
CASES = 12
"""``vllm_cuda.compile_check.kernel_cases``: 14 launches of the 11 kernels."""


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9 warns when it is unset
    return env


@pytest.fixture(scope="module")
def compiled() -> dict[str, tuple[int, list[dict[str, Any]]]]:
    """arch -> (exit status, reports) of ``python -m vllm_rocm.compile_check ARCH``, the
    architectures compiled side by side (one process each)."""
    procs = {arch: subprocess.Popen([sys.executable, "-m", "vllm_rocm.compile_check", arch], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=child_env()) for arch in ARCHS}
    results = {}
    for arch, proc in procs.items():
        out, err = proc.communicate(timeout=540)
        rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        if not rows:
            pytest.fail(f"compile_check {arch} printed nothing (exit {proc.returncode}):\n{err[-3000:]}")
        results[arch] = (proc.returncode, rows)
    return results


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_kernel_compiles_within_the_lds(compiled: dict[str, tuple[int, list[dict[str, Any]]]], arch: str) -> None:
    status, mine = compiled[arch]
    assert {r["configs"] for r in mine} == {ARCHS[arch]} and {r["arch"] for r in mine} == {arch}
    assert len({r["case"] for r in mine}) == CASES and len({r["kernel"] for r in mine}) == 11
    failed = [r for r in mine if r["error"] or r["problems"]]
    assert not failed, json.dumps(failed, indent=1)
    assert all(r["shared_bytes"] is not None for r in mine) and status == 0


def test_the_check_catches_an_lds_overflow() -> None:
    """Two pipeline stages on gfx942 (the NVIDIA entry's prefill setting) need 80 KiB of LDS for a
    float32 prefill tile: more than gfx942's 64 KiB, so the gfx942 entry runs one stage."""
    code = (
        "import json; from dataclasses import replace; from triton.backends.compiler import GPUTarget;"
        "from vllm_cuda.kernels import check_kernels; from vllm_rocm.launch_amd import AMD_LAUNCH_CONFIGS as T;"
        "c = T['gfx942']; c = replace(c, attention=replace(c.attention, prefill=replace(c.attention.prefill, num_stages=2)));"
        "r = check_kernels(c, GPUTarget('hip', 'gfx942', 64), ['attention_prefill_fp32'])[0];"
        "print(json.dumps([r.shared_bytes, r.problems]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    shared, problems = json.loads(out.stdout.strip().splitlines()[-1])
    assert shared > 64 * 1024 and problems == [f"needs {shared} bytes of shared memory; gfx942 gives a block 65536"]
