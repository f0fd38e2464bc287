"""Compile every shared Triton kernel for a GPU target, with one architecture's launch configs,
on a machine without that GPU (or any GPU).

Triton's wheels carry the NVIDIA and AMD code generators (LLVM with the AMDGPU target, ptxas
and an AMDGPU linker), so ``triton.compile(ASTSource(...), target=GPUTarget("hip", "gfx942",
64))`` runs on a CPU-only machine. What it catches without the hardware: operations or options
an architecture does not support (AMD accepts no ``tf32`` dot precision, no ``kpack`` on
gfx950), launch options Triton refuses (``num_warps`` not a power of two), and shared memory
(LDS) beyond what the architecture gives a block (``LaunchConfigs.lds_bytes``).

The launches checked are the wrappers' real ones: ``record_launches`` runs each wrapper on small
CPU tensors with the kernels' launch replaced by a recorder, so the grid, arguments, constexprs
and options are exactly what the wrapper would launch with those configs on a device.
Kernels must have been defined with ``TRITON_INTERPRET`` unset (run this in its own process).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import triton
from triton.runtime.jit import KernelInterface

from vllm_core.plugins.api import AttentionMetadata
from vllm_cuda.launch import LaunchConfigs


@dataclass
class RecordedLaunch:
    """One ``kernel[grid](...)`` call a wrapper made."""

    kernel: Any
    """The ``triton.jit`` function (a ``JITFunction``, or an ``InterpretedFunction`` under the interpreter)."""
    grid: tuple[int, ...]
    args: dict[str, Any]
    """Every kernel parameter by name (constexprs included)."""
    options: dict[str, Any]
    """Launch options: ``num_warps``, ``num_stages``, ``enable_fp_fusion``, backend keys."""

    @property
    def name(self) -> str:
        return str(getattr(self.kernel, "__name__", None) or self.kernel.fn.__name__)


@contextlib.contextmanager
def record_launches() -> Iterator[list[RecordedLaunch]]:
    """Within the block, ``kernel[grid](...)`` records the launch instead of running it."""
    recorded: list[RecordedLaunch] = []
    original = KernelInterface.__getitem__

    def getitem(self: Any, grid: Any) -> Callable[..., None]:
        def launch(*args: Any, **kwargs: Any) -> None:
            params = inspect.signature(self.fn).parameters
            options = {k: v for k, v in kwargs.items() if k not in params}
            bound = inspect.signature(self.fn).bind(*args, **{k: v for k, v in kwargs.items() if k in params})
            recorded.append(RecordedLaunch(self, tuple(grid), dict(bound.arguments), options))

        return launch

    KernelInterface.__getitem__ = getitem  # type: ignore[method-assign]
    try:
        yield recorded
    finally:
        KernelInterface.__getitem__ = original  # type: ignore[method-assign]


_POINTER_TYPES = {
    torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int64: "i64",
    torch.int32: "i32", torch.int16: "i16", torch.int8: "i8", torch.uint8: "u8", torch.bool: "i1",
}


def _arg_type(name: str, value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return "*" + _POINTER_TYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -(2**31) <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"kernel argument {name}={value!r}: no Triton type for {type(value).__name__}")


def compile_launch(launch: RecordedLaunch, target: Any) -> Any:
    """``triton.compile`` of the recorded launch for ``target`` (a ``GPUTarget``): the kernel."""
    from triton.compiler import ASTSource

    fn = launch.kernel
    signature: dict[str, str] = {}
    constexprs: dict[str, Any] = {}
    for param in fn.params:
        value = launch.args[param.name]
        if param.is_constexpr:
            signature[param.name] = "constexpr"
            constexprs[param.name] = value
        else:
            signature[param.name] = _arg_type(param.name, value)
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    return triton.compile(src, target=target, options=dict(launch.options))


# ------------------------------------------------------------------------------ the launches
def _metadata(query_lens: list[int], context_lens: list[int], block_size: int) -> AttentionMetadata:
    """Metadata of a batch; only its host fields steer the wrapper (device values are not read)."""
    seq_lens = [c + q for c, q in zip(context_lens, query_lens)]
    starts = [0]
    for q in query_lens:
        starts.append(starts[-1] + q)
    max_blocks = max(-(-s // block_size) for s in seq_lens)
    n = len(query_lens)
    return AttentionMetadata(
        slot_mapping=torch.zeros(starts[-1], dtype=torch.int64),
        block_tables=torch.zeros(n, max_blocks, dtype=torch.int32),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
        query_start_loc=torch.tensor(starts, dtype=torch.int32),
        seq_lens_cpu=seq_lens, query_start_loc_cpu=starts, max_query_len=max(query_lens),
        max_seq_len=max(seq_lens), num_decodes=sum(1 for q in query_lens if q == 1), block_size=block_size,
    )


def _attention(configs: LaunchConfigs, head_size: int, dtype: torch.dtype, query_lens: list[int],
               context_lens: list[int], split_kv: bool) -> None:
    from vllm_cuda.ops.paged_attention import paged_attention

    block_size, num_kv_heads, group = 16, 8, 2
    md = _metadata(query_lens, context_lens, block_size)
    cache = torch.zeros(md.block_tables.numel(), block_size, num_kv_heads, head_size, dtype=dtype)
    query = torch.zeros(md.num_tokens, num_kv_heads * group, head_size, dtype=dtype)
    paged_attention(query, cache, cache.clone(), md, head_size**-0.5, split_kv=split_kv, configs=configs)


def kernel_cases(configs: LaunchConfigs, dtype: torch.dtype = torch.bfloat16) -> dict[str, Callable[[], object]]:
    """Named calls of every wrapper that together reach every launch site of the shared kernels
    (Qwen3 / Llama-like sizes: hidden 4096, heads of 128 and 256, GQA 2)."""
    from vllm_cuda.ops.activation import silu_and_mul
    from vllm_cuda.ops.kv_cache import reshape_and_cache
    from vllm_cuda.ops.norm import fused_add_rms_norm, rms_norm
    from vllm_cuda.ops.rotary import qk_norm_rotary, rotary_embedding
    from vllm_cuda.sampler import gumbel_argmax

    t, hidden, hq, hk, d = 4, 4096, 16, 8, 128
    x = torch.zeros(t, hidden, dtype=dtype)
    w = torch.zeros(hidden, dtype=dtype)
    q, k = torch.zeros(t, hq, d, dtype=dtype), torch.zeros(t, hk, d, dtype=dtype)
    pos, cos_sin = torch.zeros(t, dtype=torch.int64), torch.zeros(64, d)
    cache = torch.zeros(8, 16, hk, d, dtype=dtype)
    return {
        "rms_norm": lambda: rms_norm(x, w, 1e-6, configs),
        "fused_add_rms_norm": lambda: fused_add_rms_norm(x, x.clone(), w, 1e-6, configs),
        "rotary_embedding": lambda: rotary_embedding(pos, q, k, cos_sin, configs),
        "qk_norm_rotary": lambda: qk_norm_rotary(pos, q, k, w[:d], w[:d], 1e-6, cos_sin, configs),
        "silu_and_mul": lambda: silu_and_mul(torch.zeros(t, 2 * 11008, dtype=dtype), configs),
        "reshape_and_cache": lambda: reshape_and_cache(k, k.clone(), cache, cache.clone(), pos, configs),
        "attention_decode": lambda: _attention(configs, 128, dtype, [1] * 4, [40] * 4, split_kv=False),
        "attention_prefill": lambda: _attention(configs, 128, dtype, [100, 1], [30, 60], split_kv=False),
        "attention_prefill_head256": lambda: _attention(configs, 256, dtype, [100, 1], [30, 60], split_kv=False),
        "attention_prefill_fp32": lambda: _attention(configs, 128, torch.float32, [100], [30], split_kv=False),
        "attention_split_kv": lambda: _attention(configs, 128, dtype, [1, 1], [900, 300], split_kv=True),
        "sampler": lambda: gumbel_argmax(torch.zeros(2, 151936, dtype=dtype), torch.ones(2), 0, configs),
    }


@dataclass
class KernelReport:
    """One compiled launch: where it came from, what it asked for, what it needs."""

    case: str
    kernel: str
    options: dict[str, Any]
    shared_bytes: int | None = None
    error: str | None = None
    problems: list[str] = field(default_factory=list)
    """Why the compiled kernel would not run on the architecture (shared memory past its limit)."""

    @property
    def ok(self) -> bool:
        return self.error is None and not self.problems


def check_kernels(configs: LaunchConfigs, target: Any, cases: list[str] | None = None) -> list[KernelReport]:
    """Compile every launch of ``kernel_cases(configs)`` (or the named ones) for ``target``."""
    reports = []
    for case, call in kernel_cases(configs).items():
        if cases is not None and case not in cases:
            continue
        with record_launches() as launches:
            call()
        for launch in launches:
            report = KernelReport(case, launch.name, dict(launch.options))
            try:
                compiled = compile_launch(launch, target)
            except Exception as e:  # noqa: BLE001 - a report, not a crash: every kernel is tried
                report.error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
            else:
                report.shared_bytes = int(compiled.metadata.shared)
                if configs.lds_bytes is not None and report.shared_bytes > configs.lds_bytes:
                    report.problems.append(
                        f"needs {report.shared_bytes} bytes of shared memory; {configs.name} gives a block "
                        f"{configs.lds_bytes}")
            reports.append(report)
    return reports


def main(argv: list[str] | None = None) -> int:
    """``python -m vllm_cuda.compile_check [sm_90 ...]``: compile every kernel for NVIDIA
    architectures with their table entries (``sm_90`` -> ``GPUTarget("cuda", 90, 32)``); one JSON
    object per launch; exit 1 if any fails or exceeds the entry's shared memory."""
    import argparse
    import json
    import os

    from triton.backends.compiler import GPUTarget

    from vllm_cuda.launch_nvidia import nvidia_launch_configs

    ap = argparse.ArgumentParser(prog="python -m vllm_cuda.compile_check")
    ap.add_argument("archs", nargs="*", default=["sm_90"], help="sm_XY")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        ap.error("TRITON_INTERPRET=1 is set: the kernels are interpreted functions, which do not compile; unset it")
    failed = 0
    for arch in args.archs:
        capability = (int(arch[3:-1]), int(arch[-1]))
        configs = nvidia_launch_configs(capability)
        for report in check_kernels(configs, GPUTarget("cuda", capability[0] * 10 + capability[1], 32)):
            failed += not report.ok
            print(json.dumps({"arch": arch, "configs": configs.name, **vars(report)}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
