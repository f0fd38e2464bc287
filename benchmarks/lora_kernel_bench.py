#!/usr/bin/env python3
"""LoRA op micro-benchmark on one GPU: GPU time per call of the batched LoRA op, per projection
of a Qwen3-0.6B layer (4 adapters of rank 16 in 4 slots, every row on an adapter, bfloat16),
for the round-1 Triton kernels (``lora_ops_baseline.py``), the current ones, and the PyTorch
fallback, next to the base projection's own matmul.

Each op is captured ``--reps`` times in one CUDA graph (as decode steps replay it), so the
numbers are GPU time per launch pair without host launch overhead. The last column per token
count is the LoRA cost of one decoder layer (four projections) as a fraction of its four base
matmuls. Usage: ``python benchmarks/lora_kernel_bench.py [--tokens 1 16 64 256] [--out f.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Qwen3-0.6B: hidden 1024, 16 q heads x 128, 8 kv heads x 128, intermediate 3072
MODULES = {"qkv": (1024, (2048, 1024, 1024)), "o": (2048, (1024,)), "gate_up": (1024, (3072, 3072)),
           "down": (3072, (1024,))}


def gpu_us(fn: Any, reps: int) -> float:
    """GPU microseconds per call of ``fn``, replayed from one CUDA graph of ``reps`` calls."""
    fn()  # compile / warm up outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        fn()
        stream.synchronize()
        with torch.cuda.graph(graph, stream=stream):
            for _ in range(reps):
                fn()
    graph.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(5):
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) * 1000 / reps)
    return best


def bench_module(module: str, t: int, k: int, sizes: tuple[int, ...], impls: dict[str, Any],
                 tables: dict[str, Any], slots_buf: torch.Tensor, scaling: torch.Tensor, rank: int, reps: int,
                 g: torch.Generator) -> dict[str, Any]:
    """One projection at ``t`` tokens: the base matmul and each op's GPU time, and the current
    op's error against the PyTorch one."""
    dev, dtype = slots_buf.device, torch.bfloat16
    n = sum(sizes)
    x = torch.randn(t, k, device=dev, dtype=dtype, generator=g)
    w = torch.randn(n, k, device=dev, dtype=dtype, generator=g) / k**0.5
    a = torch.randn(len(sizes), scaling.shape[0], rank, k, device=dev, dtype=dtype, generator=g) * 0.01
    b = torch.randn(scaling.shape[0], rank, n, device=dev, dtype=dtype, generator=g) * 0.01
    out = torch.zeros(t, n, device=dev, dtype=dtype)
    slots = slots_buf[:t]
    row: dict[str, Any] = {"tokens": t, "module": module, "base": gpu_us(lambda: torch.nn.functional.linear(x, w), reps)}
    deltas = {}
    for name, ops in impls.items():
        tab = ops.step_tables(tables[name], t)
        deltas[name] = torch.zeros(t, n, device=dev, dtype=torch.float32)
        ops.add_lora(deltas[name], x, a, b, sizes, slots, scaling, tab)
        try:
            row[name] = gpu_us(lambda ops=ops, tab=tab: ops.add_lora(out, x, a, b, sizes, slots, scaling, tab), reps)
        except Exception as exc:  # noqa: BLE001 - report and go on with the others
            print(f"{name} {module} tokens={t}: {type(exc).__name__}: {exc}", file=sys.stderr)
            row[name] = float("nan")
    span = float(deltas["torch"].abs().max()) or 1.0
    row["new_vs_torch_err"] = float((deltas["new"] - deltas["torch"]).abs().max()) / span
    if row["new_vs_torch_err"] > 2e-2:
        print(f"MISMATCH {module} tokens={t}: new vs torch max error {row['new_vs_torch_err']:.3g} of the delta's "
              "span", file=sys.stderr)
    return row


def sweep(args: argparse.Namespace, results: list[dict[str, Any]], g: torch.Generator, dev: torch.device) -> None:
    """GPU us per decoder layer (four projections) of the current op for each launch setting."""
    from vllm_lora.ops.triton_ops import TritonLoRAOps

    scaling = torch.full((args.slots,), 2.0, device=dev)
    d = TritonLoRAOps
    settings = [(d.block_m, bn, w) for bn in (64, 128, 256) for w in (1, 2, 4, 8)]
    settings += [(bm, d.block_n, d.waves) for bm in (32, 64)]
    print(f"\ncurrent op per layer (us) by block_m/block_n/waves (defaults {d.block_m}/{d.block_n}/{d.waves}):")
    print(f"{'tokens':>6} " + " ".join(f"{f'{bm}/{bn}/{w}':>9}" for bm, bn, w in settings))
    for t in args.sweep_tokens or args.tokens:
        slots_buf = torch.full((8192,), -1, dtype=torch.int64, device=dev)
        slots_buf[:t] = torch.arange(t, device=dev) % args.slots
        line = []
        for bm, bn, w in settings:
            ops = TritonLoRAOps()
            ops.block_m, ops.block_n, ops.waves = bm, bn, w
            tables = ops.token_tables(slots_buf, scaling, torch.bfloat16)
            total = 0.0
            for module, (k, sizes) in MODULES.items():
                total += time_op(ops, tables, module, t, k, sizes, slots_buf, scaling, args, g)
            line.append(total)
            results.append({"tokens": t, "sweep_block_m": bm, "sweep_block_n": bn, "sweep_waves": w, "layer_us": total})
        print(f"{t:>6} " + " ".join(f"{v:>9.1f}" for v in line))


def time_op(ops: Any, tables: Any, module: str, t: int, k: int, sizes: tuple[int, ...], slots_buf: torch.Tensor,
            scaling: torch.Tensor, args: argparse.Namespace, g: torch.Generator) -> float:
    dev, dtype = slots_buf.device, torch.bfloat16
    n = sum(sizes)
    x = torch.randn(t, k, device=dev, dtype=dtype, generator=g)
    a = torch.randn(len(sizes), args.slots, args.rank, k, device=dev, dtype=dtype, generator=g) * 0.01
    b = torch.randn(args.slots, args.rank, n, device=dev, dtype=dtype, generator=g) * 0.01
    out = torch.zeros(t, n, device=dev, dtype=dtype)
    tab = ops.step_tables(tables, t)
    return gpu_us(lambda: ops.add_lora(out, x, a, b, sizes, slots_buf[:t], scaling, tab), args.reps)


def main() -> None:
    from lora_ops_baseline import BaselineTritonLoRAOps
    from vllm_lora.ops.torch_ops import TorchLoRAOps
    from vllm_lora.ops.triton_ops import TritonLoRAOps

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 8, 32, 64, 128, 256, 512, 2048])
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default=None)
    ap.add_argument("--sweep", action="store_true",
                    help="also time the current op's launch settings (block_m, block_n, waves) per layer")
    ap.add_argument("--sweep-tokens", type=int, nargs="+", default=None, help="token counts of the sweep "
                    "(default: --tokens)")
    args = ap.parse_args()
    dev = torch.device("cuda")
    dtype = torch.bfloat16
    g = torch.Generator(device=dev).manual_seed(0)
    impls = {"round1": BaselineTritonLoRAOps(), "new": TritonLoRAOps(), "torch": TorchLoRAOps()}
    buf_rows = 8192
    scaling = torch.full((args.slots,), 2.0, device=dev)
    results = []
    print(f"{torch.cuda.get_device_name()}: GPU us per call ({args.slots} adapters, rank {args.rank}, bf16)")
    print(f"{'tokens':>6} {'module':>8} {'base':>8} {'round1':>8} {'new':>8} {'torch':>8} {'new/round1':>10}")
    for t in args.tokens:
        slots_buf = torch.full((buf_rows,), -1, dtype=torch.int64, device=dev)
        slots_buf[:t] = torch.arange(t, device=dev) % args.slots
        tables = {name: ops.token_tables(slots_buf, scaling, dtype) for name, ops in impls.items()}
        per_layer = {"base": 0.0, "round1": 0.0, "new": 0.0, "torch": 0.0}
        for module, (k, sizes) in MODULES.items():
            row = bench_module(module, t, k, sizes, impls, tables, slots_buf, scaling, args.rank, args.reps, g)
            for key in per_layer:
                per_layer[key] += row[key]
            results.append(row)
            print(f"{t:>6} {module:>8} {row['base']:>8.1f} {row['round1']:>8.1f} {row['new']:>8.1f} "
                  f"{row['torch']:>8.1f} {row['new'] / row['round1']:>10.3f}")
        print(f"{t:>6} {'layer':>8} {per_layer['base']:>8.1f} {per_layer['round1']:>8.1f} {per_layer['new']:>8.1f} "
              f"{per_layer['torch']:>8.1f} {per_layer['new'] / per_layer['round1']:>10.3f}   LoRA/base matmuls: "
              f"round1 {per_layer['round1'] / per_layer['base']:.2f}, new {per_layer['new'] / per_layer['base']:.2f}, "
              f"torch {per_layer['torch'] / per_layer['base']:.2f}")
    if args.sweep:
        sweep(args, results, g, dev)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
