"""Compile-only: the Triton LoRA kernels, launched exactly as ``TritonLoRAOps.add_lora`` launches
them for Qwen3 / Llama-like projections (bfloat16, float16, float32 with IEEE dots, ranks 16 and
64, decode and prefill token counts), built into NVIDIA code (sm_90, and sm_80 for one case) on
this machine without a GPU: Triton's wheel carries the NVIDIA code generator and ptxas. Catches
what the interpreter does not see (types and layouts of the compiled kernel, unsupported
operations, shared memory past the architecture's limit) before a GPU run.

The kernels must be real JIT functions, so the compiles run in a child process without
``TRITON_INTERPRET`` (the LoRA tests' conftest sets it); the launches are recorded with
vllm-cuda's ``compile_check.record_launches`` and built with its ``compile_launch``.
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

import_or_require("vllm_cuda", "cuda-compile")
if importlib.util.find_spec("triton.backends.nvidia") is None:
    require_or_skip("cuda-compile", "this triton has no NVIDIA backend (triton.backends.nvidia)")

CHILD = r"""
import json, sys, torch
from triton.backends.compiler import GPUTarget
from vllm_cuda.compile_check import compile_launch, record_launches
from vllm_lora.ops.triton_ops import TritonLoRAOps

CASES = {  # name: (tokens, K, slice sizes, dtype, padded rank, archs)
    "qkv_decode_bf16": (256, 1024, (2048, 1024, 1024), torch.bfloat16, 16, (90, 80)),
    "down_prefill_bf16": (4096, 3072, (1024,), torch.bfloat16, 16, (90,)),
    "gate_up_fp16_r64": (8, 1024, (3072, 3072), torch.float16, 64, (90,)),
    "o_fp32": (1, 2048, (1024,), torch.float32, 16, (90,)),
}
for name, (t, k, sizes, dtype, rank, archs) in CASES.items():
    n = sum(sizes)
    out, x = torch.zeros(t, n, dtype=dtype), torch.zeros(t, k, dtype=dtype)
    a, b = torch.zeros(len(sizes), 4, rank, k, dtype=dtype), torch.zeros(4, rank, n, dtype=dtype)
    slots = torch.arange(t, dtype=torch.int64) % 4
    with record_launches() as launches:
        TritonLoRAOps().add_lora(out, x, a, b, sizes, slots, torch.ones(4))
    for arch in archs:
        for launch in launches:
            row = {"case": name, "arch": arch, "kernel": launch.name}
            try:
                compiled = compile_launch(launch, GPUTarget("cuda", arch, 32))
                row["shared"] = int(compiled.metadata.shared)
                row["cubin"] = len(compiled.asm.get("cubin", b""))
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {str(exc)[-2000:]}"
            print(json.dumps(row), flush=True)
"""


@pytest.fixture(scope="module")
def compiled() -> list[dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9 warns when it is unset
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=540)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not rows:
        pytest.fail(f"the compile child failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return rows


def test_lora_kernels_compile_for_nvidia(compiled: list[dict[str, Any]]) -> None:
    """Both kernels of every case compile to a cubin within the 227 KiB of shared memory an
    sm_90 block may use (sm_80: 163 KiB)."""
    errors = [f"{r['case']} sm_{r['arch']} {r['kernel']}: {r['error']}" for r in compiled if "error" in r]
    assert not errors, "\n".join(errors)
    assert {(r["case"], r["kernel"]) for r in compiled} == {
        (case, kernel) for case in ("qkv_decode_bf16", "down_prefill_bf16", "gate_up_fp16_r64", "o_fp32")
        for kernel in ("_shrink_kernel", "_expand_kernel")
    }
    for r in compiled:
        assert r["cubin"] > 0 and r["shared"] <= (227 if r["arch"] == 90 else 163) * 1024, r
