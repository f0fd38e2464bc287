"""Linear layers of SmolLM2's shapes on the vllm-cpu kernels: packed float32 / bfloat16 panels
against GGUF Q4_1 / Q8_0 blocks (``vc_linear_q``, int8 and int8x2 activations), one row (a
decode step's GEMV) and batches. Alternates the variants, several rounds, prints the median
microseconds and the ratio to float32. ~30 s on 2 cores.

    python benchmarks/cpu_quant_kernels.py [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from functools import partial

import numpy as np
import torch

from vllm_cpu.kernels import load_kernels
from vllm_cpu.ops import CPUOps
from vllm_cpu.quant import FILE_BLOCK_BYTES, attach, build_quant_weight

SHAPES = {"qkv": (960, 576), "gate_up": (3072, 576), "down": (576, 1536), "head": (49152, 576)}


def random_rows(qtype: str, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    nb, fb = k // 32, FILE_BLOCK_BYTES[qtype]
    b = rng.integers(0, 256, (n, nb, fb), dtype=np.uint8)
    b[:, :, 0:2] = np.full((n, nb), 0.01, np.float16).view(np.uint8).reshape(n, nb, 2)
    if qtype == "Q4_1":
        b[:, :, 2:4] = np.full((n, nb), -0.08, np.float16).view(np.uint8).reshape(n, nb, 2)
    return b.reshape(n, nb * fb)


def timeit(fn, reps: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", default="1,8,256")
    ap.add_argument("--json")
    args = ap.parse_args()
    k = load_kernels(len(os.sched_getaffinity(0)))
    assert k is not None
    torch.set_num_threads(1)
    ops = CPUOps(k)
    rng = np.random.default_rng(0)
    results = []
    print(f"load average {os.getloadavg()}")
    for name, (n, kk) in SHAPES.items():
        dense = torch.randn(n, kk) * 0.02
        dense_bf = dense.bfloat16()
        qws = {}
        for qt in ("Q4_1", "Q8_0"):
            w = torch.zeros(()).expand(n, kk)
            attach(w, build_quant_weight([(qt, random_rows(qt, n, kk, rng))], kk))
            qws[qt] = w
        for m in [int(r) for r in args.rows.split(",")]:
            x = torch.randn(m, kk)
            reps = max(3, int(2e5 / (n * kk * max(m, 4) / 1e3)))
            xb = x.bfloat16()
            variants = {
                "f32": partial(ops.linear, x, dense),
                "bf16": partial(ops.linear, xb, dense_bf),
                "Q4_1/int8": partial(ops.linear, x, qws["Q4_1"]),
                "Q4_1/int8x2": partial(ops.linear, x, qws["Q4_1"]),
                "Q8_0/int8x2": partial(ops.linear, x, qws["Q8_0"]),
            }
            times: dict[str, list[float]] = {v: [] for v in variants}
            for _ in range(args.rounds):
                for v, fn in variants.items():
                    k.set_gguf_activations("int8" if v.endswith("/int8") else "int8x2")
                    times[v].append(timeit(fn, reps))
            k.set_gguf_activations("int8x2")
            med = {v: statistics.median(t) for v, t in times.items()}
            row = {"layer": name, "n": n, "k": kk, "rows": m, "us": med,
                   "vs_f32": {v: med["f32"] / med[v] for v in med}}
            results.append(row)
            print(f"{name:8s} [{n}x{kk}] rows={m:4d}  " + "  ".join(
                f"{v} {med[v]:8.1f}us ({med['f32'] / med[v]:.2f}x)" for v in med))
    print(f"load average {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
