"""TP=1 against TP=2 on one GPU node (dummy weights): output tok/s of a throughput run and TPOT of
a latency run, side by side, with the ratios, all measured in this one invocation.

Models: Llama-3.1-8B (``configs/llama-3.1-8b``) and a 70B-shaped Llama (``configs/llama-70b-shape-20l``:
Llama-3.1-70B's layer shapes, hidden 8192, 64 / 8 heads, intermediate 28672, cut to 20 layers so
TP=1 fits one 80 GB GPU in bfloat16; per-layer TP gains are those of the 70B).

Usage on a machine with >= 2 GPUs (vllm-core and vllm-cuda installed)::

    python benchmarks/tp_scaling.py                       # both models, TP 1 and 2
    python benchmarks/tp_scaling.py --models llama-3.1-8b --tp 1 2 4 --out /tmp/tp

Each run is one ``vllm-core bench`` process (its own engine and workers); results are saved as
JSON under ``--out`` and summarised at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
THROUGHPUT = ["--num-prompts", "256", "--input-len", "1024", "--output-len", "128"]
LATENCY = ["--batch-size", "8", "--input-len", "128", "--output-len", "128", "--num-iters-warmup", "3",
           "--num-iters", "10"]


SMOKE_THROUGHPUT = ["--num-prompts", "16", "--input-len", "128", "--output-len", "32"]
SMOKE_LATENCY = ["--batch-size", "4", "--input-len", "32", "--output-len", "32", "--num-iters-warmup", "1",
                 "--num-iters", "3"]


def run(kind: str, model: str, tp: int, out: str, extra: list[str], smoke: bool) -> dict | None:  # type: ignore[type-arg]
    path = os.path.join(out, f"{kind}_{model}_tp{tp}.json")
    if kind == "throughput":
        workload = SMOKE_THROUGHPUT if smoke else THROUGHPUT
    else:
        workload = SMOKE_LATENCY if smoke else LATENCY
    common = ["--load-format", "dummy", "--dtype", "bfloat16", "--max-model-len", "512" if smoke else "4096"]
    args = [sys.executable, "-m", "vllm_core.entrypoints.cli.main", "bench", kind,
            "--model", os.path.join(HERE, "configs", model), *common, "--tensor-parallel-size", str(tp),
            *workload, *extra, "--save-result", path]
    print("$", " ".join(args[1:]), flush=True)
    proc = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        print(f"  failed ({proc.returncode}):\n{proc.stderr[-3000:]}", flush=True)
        return None
    with open(path) as f:
        return json.load(f)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["llama-3.1-8b", "llama-70b-shape-20l"])
    parser.add_argument("--tp", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--out", default="/tmp/vllm_tp_scaling")
    parser.add_argument("--smoke", action="store_true", help="small workloads (a CPU check of the script)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="more engine flags for every run, e.g. --extra --device cpu")
    a = parser.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rows = []
    for model in a.models:
        base_tps = base_tpot = None
        for tp in a.tp:
            thr = run("throughput", model, tp, a.out, a.extra, a.smoke)
            lat = run("latency", model, tp, a.out, a.extra, a.smoke)
            tps = thr["output_tokens_per_second"] if thr else None
            tpot = (lat.get("tpot") or {}).get("mean") if lat else None
            if tp == a.tp[0]:
                base_tps, base_tpot = tps, tpot
            rows.append((model, tp, tps, tpot,
                         tps / base_tps if tps and base_tps else None,
                         base_tpot / tpot if tpot and base_tpot else None))
    print(f"\n{'model':24} {'tp':>3} {'output tok/s':>13} {'TPOT ms':>9} {'tok/s x':>8} {'TPOT speed-up':>14}")
    for model, tp, tps, tpot, r1, r2 in rows:
        def fmt(v: float | None, spec: str) -> str:
            return format(v, spec) if v is not None else "failed"
        print(f"{model:24} {tp:>3} {fmt(tps, '13.1f')} {fmt(tpot * 1e3 if tpot else None, '9.2f')} "
              f"{fmt(r1, '8.2f')} {fmt(r2, '14.2f')}")


if __name__ == "__main__":
    main()
