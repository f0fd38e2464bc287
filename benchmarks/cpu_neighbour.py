#!/usr/bin/env python3
"""W1 on the cpu platform with and without a CPU-bound neighbour process, per pool wait policy.

    python benchmarks/cpu_neighbour.py                     # W1 (64 prompts), policies yield,spin,passive
    python benchmarks/cpu_neighbour.py --prompts 16 --rounds 2 --policies yield,spin --json out.json
    python benchmarks/cpu_neighbour.py --policies pool+spin,pool+yield,pool+passive   # no load guard

The neighbour is a Python busy loop pinned to one core (the first of this process's affinity),
started before the timed generate and stopped after it. Each run is a fresh process
(``VLLM_CPU_POOL=<policy>``) that loads the engine, warms up, and times one W1 generate (the
prompts of ``bench_cpu_workloads.py``, rep 0). Runs alternate: for each round, for each policy,
quiet then neighbour. Prints output tok/s of each run, the medians, and the neighbour/quiet ratio
per policy, with the 1-minute load average before each run (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, HERE)
    import numpy as np
    from bench_cpu_workloads import WORKLOADS, make_prompts

    from vllm_core import LLM, SamplingParams

    t0 = time.perf_counter()
    llm = LLM(args.model, dtype=args.dtype, max_model_len=2048, seed=0, use_tqdm_on_load=False,
              **({"quantization": args.quantization} if args.quantization else {}))
    init_s = time.perf_counter() - t0
    vocab = int(llm.llm_engine.loaded.hf_config.vocab_size)
    warm = make_prompts(np.random.default_rng(11_234), vocab, 8, 32, 128)
    llm.generate([{"prompt_token_ids": p} for p in warm], SamplingParams(temperature=0, max_tokens=16, ignore_eos=True),
                 use_tqdm=False)
    n, lo, hi, mt = WORKLOADS["W1"]
    prompts = make_prompts(np.random.default_rng(1234 + sum(map(ord, "W1"))), vocab, n, lo, hi)[: args.prompts]
    neighbour = None
    if args.neighbour:
        core = sorted(os.sched_getaffinity(0))[0]
        neighbour = subprocess.Popen([sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{core}}})\nwhile True: pass"])
        time.sleep(0.5)
    try:
        t = time.perf_counter()
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                            SamplingParams(temperature=0, max_tokens=mt, ignore_eos=True), use_tqdm=False)
        wall = time.perf_counter() - t
    finally:
        if neighbour is not None:
            neighbour.kill()
            neighbour.wait()
    n_out = sum(len(o.outputs[0].token_ids) for o in outs)
    stats = getattr(llm.llm_engine.platform.ops, "kernels", None)
    print("RESULT " + json.dumps({
        "output_tok_s": round(n_out / wall, 2), "wall_s": round(wall, 3), "init_s": round(init_s, 2),
        "pool": stats.pool_stats() if stats is not None else None,
    }), flush=True)


def run_one(args: argparse.Namespace, policy: str, neighbour: bool) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--prompts", str(args.prompts), "--dtype", args.dtype]
    if args.model:
        cmd += ["--model", args.model]
    if args.quantization:
        cmd += ["--quantization", args.quantization]
    if neighbour:
        cmd.append("--neighbour")
    env = {**os.environ, "VLLM_CPU_POOL": policy.replace("+", ","), "TOKENIZERS_PARALLELISM": "false"}
    load = os.getloadavg()[0]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"run failed ({policy}, neighbour={neighbour}):\n{out.stderr[-3000:]}")
    r = json.loads(line[len("RESULT "):])
    r.update(policy=policy, neighbour=neighbour, load_before=round(load, 2))
    print(f"  {policy:8s} neighbour={'yes' if neighbour else 'no ':3s} {r['output_tok_s']:8.1f} tok/s "
          f"(load before {load:.2f}, pool {r['pool']})", flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--neighbour", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--quantization", default=None, help="gguf / none (default: the engine's)")
    ap.add_argument("--prompts", type=int, default=64, help="W1's first N prompts (64: all of W1)")
    ap.add_argument("--policies", default="yield,spin,passive",
                    help="VLLM_CPU_POOL values, comma-separated; '+' joins a dispatch mode and a wait "
                    "policy (pool+spin: every job on the pool, workers spinning)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    runs = []
    for _ in range(args.rounds):
        for policy in args.policies.split(","):
            for neighbour in (False, True):
                runs.append(run_one(args, policy, neighbour))
    table = {}
    print(f"\nW1 ({args.prompts} prompts x 128 tokens, {args.dtype}), output tok/s, medians of {args.rounds}:")
    for policy in args.policies.split(","):
        quiet = statistics.median(r["output_tok_s"] for r in runs if r["policy"] == policy and not r["neighbour"])
        busy = statistics.median(r["output_tok_s"] for r in runs if r["policy"] == policy and r["neighbour"])
        table[policy] = {"quiet": quiet, "neighbour": busy, "ratio": round(busy / quiet, 3)}
        print(f"  {policy:8s} quiet {quiet:8.1f}  neighbour {busy:8.1f}  ratio {busy / quiet:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": runs, "table": table}, f, indent=1)


if __name__ == "__main__":
    main()
