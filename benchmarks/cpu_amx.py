#!/usr/bin/env python3
"""Batched bfloat16 linear layers: vllm-cpu's AVX512-BF16 kernel (``vc_linear_packed``) against
PyTorch's oneDNN matmul (AMX tiles where the CPU has them), per weight shape and row count, the
two alternating in one run. This is the timing ``vllm_cpu.amx.LinearDispatch`` makes at warm-up
(``VLLM_CPU_AMX=auto``), printed in full, so it can be run on an AMX machine:

    python benchmarks/cpu_amx.py                        # SmolLM2-135M and Llama-3-8B shapes
    python benchmarks/cpu_amx.py --rows 8,64,512 --json out.json

Prints the AMX status of this machine (``vllm_cpu.kernels.amx_unavailable``), then per shape
and rows: microseconds (median of ``--reps`` after a warm-up, the paths alternating) of ours, of
oneDNN as the engine runs it (``CPUOps._mm_on_pool``: chunks on our pool, one PyTorch thread
each) and of a plain ``torch.mm`` on PyTorch's own OpenMP team (``--torch-threads``, default all
cores; not used by the engine, shown for reference), GFLOP/s, oneDNN (pool) / ours (< 1: oneDNN
faster) and which one ``auto`` would keep. Writes JSON to ``--json`` or to
``$OUT/cpu_amx.json`` when ``$OUT`` is set.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

SHAPES = {
    # [out, in] of SmolLM2-135M (hidden 576, 9/3 heads of 64, inter 1536, vocab 49152)
    "smollm2.qkv": (960, 576),
    "smollm2.o": (576, 576),
    "smollm2.gate_up": (3072, 576),
    "smollm2.down": (576, 1536),
    "smollm2.head": (49152, 576),
    # Llama-3-8B (hidden 4096, 32/8 heads of 128, inter 14336)
    "llama8b.qkv": (6144, 4096),
    "llama8b.gate_up": (28672, 4096),
    "llama8b.down": (4096, 14336),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="1,8,16,64,256,1024")
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"of {', '.join(SHAPES)}")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--torch-threads", type=int, default=0, help="the torch.mm column's threads (0: all cores)")
    ap.add_argument("--max-seconds", type=float, default=150.0, help="skip the rest past this")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import logging

    from vllm_cpu.kernels import amx_unavailable, load_kernels
    from vllm_cpu.ops import CPUOps
    from vllm_cpu.platform import available_cores

    logging.basicConfig(level=logging.WARNING)
    kernels = load_kernels(available_cores())
    if kernels is None:
        raise SystemExit("the vllm-cpu kernels do not run here (no AVX512-BF16?)")
    why = amx_unavailable()
    print(f"AMX: {'usable' if why is None else why}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"pool {kernels.num_threads}; oneDNN ISA: {torch.backends.mkldnn.is_available()}", flush=True)
    omp_threads = args.torch_threads or available_cores()
    ops = CPUOps(kernels)
    t_end = time.perf_counter() + args.max_seconds
    results = []
    print(f"{'shape':18s} {'rows':>5s} {'ours us':>10s} {'oneDNN us':>10s} {f'mm/{omp_threads}t us':>11s} "
          f"{'ours GF/s':>9s} {'oneDNN GF/s':>11s} {'oneDNN/ours':>11s}  keep")
    for name in args.shapes.split(","):
        n, k = SHAPES[name]
        w = (torch.randn(n, k) / k**0.5).bfloat16()
        packed = ops.packed_weight(w)
        assert packed is not None
        for rows in (int(r) for r in args.rows.split(",")):
            if time.perf_counter() > t_end:
                print(f"(stopped at --max-seconds {args.max_seconds})")
                break
            x = torch.randn(rows, k).bfloat16()
            y_ours, y_dnn = torch.empty(rows, n, dtype=torch.bfloat16), torch.empty(rows, n, dtype=torch.bfloat16)

            def ours(x: torch.Tensor = x, y: torch.Tensor = y_ours, n: int = n, k: int = k,
                     packed: torch.Tensor = packed) -> None:
                kernels.lib.vc_linear_packed(x.data_ptr(), k, packed.data_ptr(), None, y.data_ptr(), n,
                                             x.shape[0], n, k, True)

            def onednn(x: torch.Tensor = x, y: torch.Tensor = y_dnn, w: torch.Tensor = w) -> None:
                torch.set_num_threads(1)  # as in the engine (the platform's setting with the kernels)
                ops._mm_on_pool(x, w, None, y)

            def omp(x: torch.Tensor = x, w: torch.Tensor = w) -> None:
                torch.set_num_threads(omp_threads)
                torch.mm(x, w.t())

            ours(), onednn(), omp()
            times: dict[str, list[float]] = {"ours": [], "onednn": [], "omp": []}
            for _ in range(args.reps):  # alternating
                for key, fn in (("ours", ours), ("onednn", onednn), ("omp", omp)):
                    t = time.perf_counter()
                    fn()
                    times[key].append(time.perf_counter() - t)
            med = {key: statistics.median(v) for key, v in times.items()}
            flop = 2.0 * rows * n * k
            max_diff = float((y_ours.float() - y_dnn.float()).abs().max())
            keep = "oneDNN" if med["onednn"] < med["ours"] else "ours"
            print(f"{name:18s} {rows:5d} {1e6 * med['ours']:10.1f} {1e6 * med['onednn']:10.1f} {1e6 * med['omp']:11.1f} "
                  f"{flop / med['ours'] / 1e9:9.1f} {flop / med['onednn'] / 1e9:11.1f} "
                  f"{med['onednn'] / med['ours']:11.2f}  {keep}", flush=True)
            results.append({"shape": name, "n": n, "k": k, "rows": rows, "ours_s": med["ours"],
                            "onednn_s": med["onednn"], "torch_mm_omp_s": med["omp"], "ratio_onednn_over_ours": med["onednn"] / med["ours"],
                            "keep": keep, "max_abs_diff": max_diff})
    out = args.json or (os.path.join(os.environ["OUT"], "cpu_amx.json") if os.environ.get("OUT") else None)
    if out:
        with open(out, "w") as f:
            json.dump({"amx_unavailable": why, "torch": torch.__version__, "threads": kernels.num_threads,
                       "torch_mm_threads": omp_threads, "load_avg": os.getloadavg(),
                       "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
