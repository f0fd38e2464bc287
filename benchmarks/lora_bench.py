#!/usr/bin/env python3
"""LoRA throughput: the same workload with requests spread over N adapters vs without LoRA.

Each case runs in a fresh child process (one engine at a time on the device) and prints output
tokens per second; the last lines give each LoRA case's ratio to the no-LoRA run of this
invocation. Adapters are random (rank ``--rank`` on all seven projections), written in PEFT's
format to a temporary directory.

CPU (the cpu platform, SmolLM2 GGUF, W1 shape: 64 prompts of 64-256 tokens, 128 out)::

    python benchmarks/lora_bench.py --cases base lora4

GPU (nano-vllm shape: 256 requests, 100-1024 in and out, dummy weights)::

    python benchmarks/lora_bench.py --model benchmarks/configs/qwen3-0.6b --load-format dummy \\
        --num-prompts 256 --min-input 100 --max-input 1024 --min-output 100 --max-output 1024 \\
        --dtype bfloat16 --cases base lora4 lora16
    python benchmarks/lora_bench.py --model benchmarks/configs/llama-3.1-8b --load-format dummy \\
        --num-prompts 1 --min-input 128 --max-input 128 --min-output 256 --max-output 256 \\
        --dtype bfloat16 --cases base lora1

Cases: ``base`` (enable_lora off), ``loraN`` (N adapters, ``max_loras = min(N, 8)`` unless
``--max-loras``; requests assigned round-robin). With one prompt, ``tpot_ms`` is the wall time
over the output tokens (the prefill included, small next to 256 decode steps).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

MODULES = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}


def write_adapter(path: str, hf_config: Any, rank: int, seed: int) -> None:
    """A random PEFT adapter (rank ``rank``, all seven projections) for ``hf_config``."""
    import torch
    from safetensors.torch import save_file
    from vllm_lora.adapter import ModelShapes

    shapes = ModelShapes.from_hf_config(hf_config)
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(shapes.num_layers):
        for parent, names in MODULES.items():
            for name in names:
                n_in, n_out = shapes.in_out(name)
                prefix = f"base_model.model.model.layers.{layer}.{parent}.{name}.lora_"
                tensors[prefix + "A.weight"] = torch.randn(rank, n_in, generator=g) * 0.01
                tensors[prefix + "B.weight"] = torch.randn(n_out, rank, generator=g) * 0.01
    os.makedirs(path, exist_ok=True)
    save_file(tensors, os.path.join(path, "adapter_model.safetensors"))
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "bias": "none",
                   "target_modules": [n for names in MODULES.values() for n in names]}, f)


def child(args: argparse.Namespace, case: str) -> dict[str, Any]:
    from vllm_core import LLM, LoRARequest, SamplingParams

    n_adapters = 0 if case == "base" else int(case.removeprefix("lora"))
    kw: dict[str, Any] = dict(dtype=args.dtype, max_model_len=args.max_input + args.max_output + 8,
                              use_tqdm_on_load=False)
    if args.load_format:
        kw["load_format"] = args.load_format
    if args.device:
        kw["device"] = args.device
    if n_adapters:
        kw.update(enable_lora=True, max_loras=args.max_loras or min(n_adapters, 8), max_lora_rank=args.rank,
                  max_cpu_loras=max(n_adapters, args.max_loras or 1))
    t0 = time.perf_counter()
    llm = LLM(args.model, **kw)
    init_s = time.perf_counter() - t0
    hf_config = llm.llm_engine.loaded.hf_config
    tmp = tempfile.mkdtemp(prefix="lora-bench-")
    loras: list[Any] = [None]
    if n_adapters:
        loras = []
        for i in range(n_adapters):
            write_adapter(os.path.join(tmp, f"a{i}"), hf_config, args.rank, seed=i)
            loras.append(LoRARequest(f"a{i}", i + 1, os.path.join(tmp, f"a{i}")))
    rng = np.random.default_rng(args.seed)
    vocab = hf_config.vocab_size
    n = args.num_prompts
    in_lens = rng.integers(args.min_input, args.max_input + 1, size=n)
    out_lens = rng.integers(args.min_output, args.max_output + 1, size=n)
    prompts = [{"prompt_token_ids": rng.integers(100, vocab, size=int(k)).tolist()} for k in in_lens]
    params = [SamplingParams(temperature=0, max_tokens=int(m), ignore_eos=True) for m in out_lens]
    per_req = [loras[i % len(loras)] for i in range(n)]
    warm = [{"prompt_token_ids": rng.integers(100, vocab, size=16).tolist()} for _ in loras]
    llm.generate(warm, SamplingParams(temperature=0, max_tokens=4, ignore_eos=True), use_tqdm=False,
                 lora_request=None if not n_adapters else loras)
    t = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False, lora_request=None if not n_adapters else per_req)
    wall = time.perf_counter() - t
    n_out = sum(len(o.outputs[0].token_ids) for o in outs)
    return {"case": case, "adapters": n_adapters, "max_loras": kw.get("max_loras", 0), "requests": n,
            "output_tokens": n_out, "wall_s": round(wall, 3), "output_tok_s": round(n_out / wall, 1),
            "tpot_ms": round(1000 * wall / max(int(out_lens.max()), 1), 2) if n == 1 else None,
            "engine_init_s": round(init_s, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="HF dir, .gguf, or a benchmarks/configs dir with --load-format dummy")
    ap.add_argument("--load-format", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--min-input", type=int, default=64)
    ap.add_argument("--max-input", type=int, default=256)
    ap.add_argument("--min-output", type=int, default=128)
    ap.add_argument("--max-output", type=int, default=128)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--max-loras", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", nargs="+", default=["base", "lora4"])
    ap.add_argument("--warmup", action="store_true",
                    help="run the first case once more before the timed ones, untimed (fills the Triton / compile "
                         "caches on disk, which the first process of a fresh machine otherwise pays inside its timing)")
    ap.add_argument("--out", default=None, help="write the results as JSON")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args, args.child)), flush=True)
        return
    results = []
    if args.warmup:
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child", args.cases[0]], capture_output=True)
    for case in args.cases:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--child", case]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"case {case} failed (exit {proc.returncode})")
        r = json.loads(line.removeprefix("RESULT "))
        results.append(r)
        print(json.dumps(r), flush=True)
    base = next((r for r in results if r["case"] == "base"), None)
    if base is not None:
        for r in results:
            if r is not base:
                ratio = r["output_tok_s"] / base["output_tok_s"]
                extra = ""
                if r["tpot_ms"] and base["tpot_ms"]:
                    extra = f", TPOT {r['tpot_ms']} vs {base['tpot_ms']} ms ({r['tpot_ms'] / base['tpot_ms']:.3f}x)"
                print(f"{r['case']} (max_loras={r['max_loras']}): {r['output_tok_s']} vs base {base['output_tok_s']} "
                      f"output tok/s = {ratio:.3f}{extra}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
