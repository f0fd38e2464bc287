#!/usr/bin/env python3
"""vllm-core (cpu platform) against llama.cpp (llama-cpp-python) on the same GGUF file, same
threads, alternating in one run: start-up, W3 (1 x 32 prompt ids, 256 out) and W1 (64 prompts of
64-256 ids, 128 out; ``--w1-prompts`` takes the first N), greedy, prompts of
``bench_cpu_workloads.py``.

    python benchmarks/cpu_vs_llamacpp.py                          # the default model, 2 rounds
    python benchmarks/cpu_vs_llamacpp.py --rounds 3 --w1-prompts 16 --json out.json

llama-cpp-python must be importable (a wheel built with ``GGML_NATIVE=OFF`` and the AVX-512
flags: a ``-march=native`` build segfaulted on these machines; see benchmarks/CPU_NOTES.md). Its
W1 runs llama.cpp's own batched decoding through the low-level API (one ``llama_decode`` per
step with a token of every running sequence, prompts prefilled in batches of ``n_batch``), so
both engines batch (llama.cpp's per-sequence KV streams, ``kv_unified=false``, and flash
attention: its defaults); ``OMP_WAIT_POLICY=PASSIVE`` is set for it (a shared machine;
``--llama-wait ''`` leaves OpenMP's default, ``--llama-threads`` sets its thread count). Each engine
runs in a fresh process per round (ours, llama.cpp, ours, ...); start-up is engine construction
to ready after imports. Prints each run, then medians and ratios (ours / llama.cpp for tok/s,
llama.cpp / ours for ms/token and start-up, so > 1 means ours is better), with load averages.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))


def _prompts(vocab: int, name: str, limit: int | None) -> tuple[list[list[int]], int]:
    sys.path.insert(0, HERE)
    import numpy as np
    from bench_cpu_workloads import WORKLOADS, make_prompts

    n, lo, hi, mt = WORKLOADS[name]
    prompts = make_prompts(np.random.default_rng(1234 + sum(map(ord, name))), vocab, n, lo, hi)
    return prompts[:limit] if limit else prompts, mt


def child_ours(args: argparse.Namespace) -> dict[str, Any]:
    from vllm_core import LLM, SamplingParams

    t0 = time.perf_counter()
    llm = LLM(args.model, dtype=args.dtype, max_model_len=2048, seed=0, use_tqdm_on_load=False,
              **({"quantization": args.quantization} if args.quantization else {}))
    init_s = time.perf_counter() - t0
    vocab = int(llm.llm_engine.loaded.hf_config.vocab_size)
    warm, _ = _prompts(vocab, "W3", None)
    llm.generate([{"prompt_token_ids": p} for p in warm], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True),
                 use_tqdm=False)
    out: dict[str, Any] = {"init_s": init_s}
    for name in args.workloads.split(","):
        prompts, mt = _prompts(vocab, name, args.w1_prompts if name == "W1" else None)
        t = time.perf_counter()
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                            SamplingParams(temperature=0, max_tokens=mt, ignore_eos=True), use_tqdm=False)
        wall = time.perf_counter() - t
        n_out = sum(len(o.outputs[0].token_ids) for o in outs)
        out[name] = {"wall_s": wall, "output_tokens": n_out, "output_tok_s": n_out / wall,
                     "ms_per_token": 1000 * wall / n_out, "first_ids": outs[0].outputs[0].token_ids[:8]}
    return out


class LlamaCpp:
    """Greedy batched generation on llama.cpp's C API (llama-cpp-python's low-level bindings)."""

    def __init__(self, path: str, threads: int, n_seq: int, n_ctx: int) -> None:
        import llama_cpp as lc

        self.lc = lc
        lc.llama_backend_init()
        mparams = lc.llama_model_default_params()
        load = getattr(lc, "llama_model_load_from_file", None) or lc.llama_load_model_from_file
        self.model = load(path.encode(), mparams)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {path}")
        cparams = lc.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = n_ctx, 2048, 512
        cparams.n_seq_max, cparams.n_threads, cparams.n_threads_batch = n_seq, threads, threads
        init = getattr(lc, "llama_init_from_model", None) or lc.llama_new_context_with_model
        self.ctx = init(self.model, cparams)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context")
        vocab = lc.llama_model_get_vocab(self.model)
        self.n_vocab = int(lc.llama_vocab_n_tokens(vocab))
        self.batch = lc.llama_batch_init(2048, 0, n_seq)

    def clear(self) -> None:
        lc = self.lc
        if hasattr(lc, "llama_memory_clear"):
            lc.llama_memory_clear(lc.llama_get_memory(self.ctx), True)
        elif hasattr(lc, "llama_kv_self_clear"):
            lc.llama_kv_self_clear(self.ctx)
        else:
            lc.llama_kv_cache_clear(self.ctx)

    def _decode(self, items: list[tuple[int, int, int, bool]]) -> None:
        b = self.batch
        for i, (tok, pos, seq, logits) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i] = tok, pos, 1
            b.seq_id[i][0] = seq
            b.logits[i] = logits
        b.n_tokens = len(items)
        rc = self.lc.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def _argmax(self, i: int) -> int:
        import numpy as np

        ptr = self.lc.llama_get_logits_ith(self.ctx, i)
        row = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.n_vocab,))
        return int(row.argmax())

    def generate(self, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
        self.clear()
        out: list[list[int]] = [[] for _ in prompts]
        last: dict[int, int] = {}  # seq -> batch index of its logits in the last decode
        pending: list[tuple[int, int, int, bool]] = []
        for s, p in enumerate(prompts):  # prefill, batches of up to 2048 tokens
            for j, tok in enumerate(p):
                if len(pending) == 2048:
                    self._decode(pending)
                    for k, item in enumerate(pending):
                        if item[3]:
                            last[item[2]] = k
                            out[item[2]].append(self._argmax(k))
                    pending = []
                pending.append((tok, j, s, j == len(p) - 1))
        if pending:
            self._decode(pending)
            for k, item in enumerate(pending):
                if item[3]:
                    out[item[2]].append(self._argmax(k))
        for _step in range(max_tokens - 1):
            items = [(out[s][-1], len(p) + len(out[s]) - 1, s, True) for s, p in enumerate(prompts)]
            self._decode(items)
            for k, (_, _, s, _) in enumerate(items):
                out[s].append(self._argmax(k))
        return out


def child_llama(args: argparse.Namespace) -> dict[str, Any]:
    from vllm_core.model_executor.model_loader.default_model import default_model_path

    path = args.model or default_model_path()
    threads = args.llama_threads or int(os.environ.get("VLLM_CPU_NUM_THREADS") or len(os.sched_getaffinity(0)))
    n_seq = args.w1_prompts or 64
    t0 = time.perf_counter()
    eng = LlamaCpp(path, threads, n_seq, n_ctx=512 * n_seq)
    init_s = time.perf_counter() - t0
    warm, _ = _prompts(eng.n_vocab, "W3", None)
    eng.generate(warm, 8)
    out: dict[str, Any] = {"init_s": init_s, "threads": threads, "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                           "system_info": eng.lc.llama_print_system_info().decode()}
    for name in args.workloads.split(","):
        prompts, mt = _prompts(eng.n_vocab, name, args.w1_prompts if name == "W1" else None)
        t = time.perf_counter()
        toks = eng.generate(prompts, mt)
        wall = time.perf_counter() - t
        n_out = sum(len(x) for x in toks)
        out[name] = {"wall_s": wall, "output_tokens": n_out, "output_tok_s": n_out / wall,
                     "ms_per_token": 1000 * wall / n_out, "first_ids": toks[0][:8]}
    return out


def run_child(args: argparse.Namespace, engine: str) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", engine, "--dtype", args.dtype]
    for flag, value in (("--model", args.model), ("--quantization", args.quantization),
                        ("--w1-prompts", args.w1_prompts), ("--workloads", args.workloads),
                        ("--llama-threads", args.llama_threads)):
        if value:
            cmd += [flag, str(value)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if engine == "llama.cpp" and args.llama_wait:
        env["OMP_WAIT_POLICY"] = args.llama_wait
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{engine} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    r = json.loads(line[len("RESULT "):])
    r.update(engine=engine, load_before=round(load, 2), load_after=round(os.getloadavg()[0], 2))
    w3 = f"W3 {r['W3']['ms_per_token']:6.2f} ms/token  " if "W3" in r else ""
    w1 = f"W1 {r['W1']['output_tok_s']:7.1f} tok/s  " if "W1" in r else ""
    print(f"  {engine:9s} start {r['init_s']:5.2f} s  {w3}{w1}(load {r['load_before']} -> {r['load_after']})", flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", choices=["ours", "llama.cpp"], help=argparse.SUPPRESS)
    ap.add_argument("--model", default=None, help="a .gguf file; default: the embedded SmolLM2 Q4_1")
    ap.add_argument("--dtype", default="float32", help="ours: the activations' dtype")
    ap.add_argument("--quantization", default=None, help="ours: gguf / none (default: the engine's, gguf)")
    ap.add_argument("--w1-prompts", type=int, default=None, help="W1's first N prompts (default all 64)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workloads", default="W3,W1", help="of W3, W1")
    ap.add_argument("--engines", default="ours,llama.cpp", help="which engines run, alternating in this order")
    ap.add_argument("--llama-threads", type=int, default=None, help="llama.cpp's threads (default: ours)")
    ap.add_argument("--llama-wait", default="PASSIVE", help="llama.cpp's OMP_WAIT_POLICY ('' leaves it unset)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.child:
        r = child_ours(args) if args.child == "ours" else child_llama(args)
        print("RESULT " + json.dumps(r), flush=True)
        return
    engines = args.engines.split(",")
    runs = [run_child(args, engine) for _ in range(args.rounds) for engine in engines]
    if len(engines) < 2:
        return

    def med(engine: str, key: str, sub: str | None = None) -> float:
        return statistics.median(r[key][sub] if sub else r[key] for r in runs if r["engine"] == engine)

    table = {"start_s": (med("ours", "init_s"), med("llama.cpp", "init_s"))}
    if "W3" in args.workloads:
        table["W3_ms_per_token"] = (med("ours", "W3", "ms_per_token"), med("llama.cpp", "W3", "ms_per_token"))
    if "W1" in args.workloads:
        table["W1_output_tok_s"] = (med("ours", "W1", "output_tok_s"), med("llama.cpp", "W1", "output_tok_s"))
    n1 = args.w1_prompts or 64
    print(f"\nmedians of {args.rounds} rounds (W1: {n1} prompts x 128 out; ours {args.dtype}, "
          f"quantization {args.quantization or 'default'}):")
    print(f"  {'':18s} {'ours':>9s} {'llama.cpp':>10s}  ratio (>1: ours better)")
    for key, (ours, theirs) in table.items():
        ratio = ours / theirs if key.startswith("W1") else theirs / ours
        print(f"  {key:18s} {ours:9.2f} {theirs:10.2f}  {ratio:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": runs,
                       "table": {k: {"ours": a, "llama.cpp": b} for k, (a, b) in table.items()}}, f, indent=1)


if __name__ == "__main__":
    main()
