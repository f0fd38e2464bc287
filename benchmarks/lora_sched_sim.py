#!/usr/bin/env python3
"""What the scheduler does with LoRA adapters: the real engine on the CPU, a tiny random model.

The nano-vllm workload's shape (requests spread round-robin over N adapters, random input and
output lengths, ``ignore_eos``) scaled down so each case takes seconds; the same requests run
without LoRA (``base``), over 4 adapters (``lora4``, ``max_loras=4``) and over 16 adapters with
``max_loras=8`` (``lora16``). Per case it prints:

- ``steps``: engine steps until the last request finished, and ``rows/step`` (requests in a
  step; ``decode rows/step`` only those sampling a token);
- ``bound``: the fewest steps any schedule can take under ``max_loras``: an adapter's requests
  hold its slot for at least their longest decode, so ``sum over adapters of the longest output
  / max_loras`` (base: the longest output);
- ``slot loads``: adapters copied into a device slot (16 is one per adapter: no thrashing);
- ``wait``: steps from a request's arrival to its first scheduled step (mean, p95, max), and for
  the requests whose adapter was not resident when they arrived;
- ``host us/step``: the LoRA extension's ``prepare_step`` in-process (on the reference platform
  its tables are the PyTorch op's, computed by torch on the CPU), and the same without
  ``LoRABatch.load_step`` (the slot map and slot assignment alone); then the host cost of the
  Triton op's tables (``TritonLoRAOps.host_tables``, numpy) and ``load_step`` with them for 256
  rows over 16 or 8 slots.

``--stream`` adds requests over time instead (``--rate`` per step) with a few hot adapters that
always have requests and a cold one arriving now and then: the case where a cold adapter can
starve when resident adapters keep getting new requests; ``max wait`` shows the bound.

Example (about a minute on 2 cores)::

    python benchmarks/lora_sched_sim.py
    python benchmarks/lora_sched_sim.py --stream
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lora_bench import write_adapter  # noqa: E402


def tiny_model(path: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, Qwen3Config

    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
                      tie_word_embeddings=True)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.save_pretrained(path, safe_serialization=True)
    return cfg


class Recorder:
    """Observes the engine's steps (wraps ``schedule`` and the LoRA extension; changes nothing)."""

    def __init__(self, llm: Any) -> None:
        core = llm.llm_engine.core
        self.core = core
        self.rows: list[int] = []
        self.decode_rows: list[int] = []
        self.adapters: list[int] = []
        self.first: dict[str, int] = {}
        self.loads = 0
        self.host_s: list[float] = []
        self.tables_s: list[float] = []
        sched = core.scheduler
        schedule = sched.schedule

        def recording() -> Any:
            out = schedule()
            if out.scheduled:
                step = len(self.rows)
                self.rows.append(len(out.scheduled))
                self.decode_rows.append(sum(1 for sr in out.scheduled if sr.num_tokens == 1))
                self.adapters.append(len({_digest(sr.extensions) for sr in out.scheduled} - {None}))
                for sr in out.scheduled:
                    self.first.setdefault(sr.req_id, step)
            return out

        sched.schedule = recording
        ext = core.runner.extensions.get("lora")
        if ext is not None:
            assign, prepare = ext.slots.assign, ext.prepare_step

            def counting_assign(needed: Any) -> Any:
                out = assign(needed)
                self.loads += len(out[1])
                return out

            def timed_prepare(output: Any, inputs: Any) -> None:
                t = time.perf_counter()
                prepare(output, inputs)
                self.host_s.append(time.perf_counter() - t)

            load_step = ext.batch.load_step

            def timed_load_step(rows: Any, to_device: Any) -> None:
                t = time.perf_counter()
                load_step(rows, to_device)
                self.tables_s.append(time.perf_counter() - t)

            ext.slots.assign = counting_assign
            ext.prepare_step = timed_prepare
            ext.batch.load_step = timed_load_step

    @property
    def step(self) -> int:
        return len(self.rows)


def _digest(extensions: Any) -> str | None:
    from vllm_lora.request import AdapterRef

    ref = extensions.get(AdapterRef)
    return None if ref is None else ref.digest


def run_case(args: argparse.Namespace, model_dir: str, hf_config: Any, n_adapters: int, max_loras: int,
             adapter_dirs: list[str]) -> dict[str, Any]:
    from vllm_core import LLM, LoRARequest, SamplingParams

    kw: dict[str, Any] = dict(dtype="float32", device=args.device, max_model_len=args.max_input + args.max_output + 8,
                              skip_tokenizer_init=True, use_tqdm_on_load=False, max_num_seqs=args.max_num_seqs,
                              max_num_batched_tokens=args.budget)
    if n_adapters:
        kw.update(enable_lora=True, max_loras=max_loras, max_lora_rank=16, max_cpu_loras=max(n_adapters, max_loras))
        kw.update(args.lora_kw)
    llm = LLM(model_dir, **kw)
    rec = Recorder(llm)
    engine = llm.llm_engine
    loras = [LoRARequest(f"a{i}", i + 1, adapter_dirs[i]) for i in range(n_adapters)] or [None]
    rng = np.random.default_rng(args.seed)
    n = args.num_prompts
    in_lens = rng.integers(args.min_input, args.max_input + 1, size=n)
    out_lens = rng.integers(args.min_output, args.max_output + 1, size=n)
    if args.stream:  # hot adapters 0..hot-1 get most requests, the others are cold
        hot = max(1, min(max_loras, n_adapters))
        which = [i % hot if rng.random() > args.cold_share or n_adapters <= hot else rng.integers(hot, n_adapters)
                 for i in range(n)]
        arrive = np.floor(np.arange(n) / args.rate).astype(int)
    else:
        which = [i % len(loras) for i in range(n)]
        arrive = np.zeros(n, dtype=int)
    reqs = []
    for i in range(n):
        prompt = {"prompt_token_ids": rng.integers(3, hf_config.vocab_size, size=int(in_lens[i])).tolist()}
        params = SamplingParams(temperature=0.0, max_tokens=int(out_lens[i]), ignore_eos=True, detokenize=False)
        lr = loras[which[i] % len(loras)]
        reqs.append((str(i), prompt, params, None if lr is None else {"lora_request": lr}))
    arrival_step: dict[str, int] = {}
    cold_at_arrival: dict[str, bool] = {}
    finish: dict[str, int] = {}
    nxt = 0
    t0 = time.perf_counter()
    while nxt < n or engine.has_unfinished_requests():
        while nxt < n and arrive[nxt] <= rec.step:
            rid, prompt, params, rargs = reqs[nxt]
            engine.add_request(rid, prompt, params, rargs)
            arrival_step[rid] = rec.step
            ext = engine.core.runner.extensions.get("lora")
            digest = None if rargs is None else _adapter_digest(engine, rid)
            cold_at_arrival[rid] = digest is not None and ext is not None and digest not in ext.slots.slots
            nxt += 1
        for out in engine.step():
            if out.finished:
                finish[out.request_id] = rec.step
    wall = time.perf_counter() - t0
    waits = np.array([rec.first[r] - arrival_step[r] for r in arrival_step])
    cold = np.array([rec.first[r] - arrival_step[r] for r in arrival_step if cold_at_arrival[r]] or [0])
    per_adapter_max: dict[int, int] = defaultdict(int)
    for i in range(n):
        per_adapter_max[which[i] % len(loras)] = max(per_adapter_max[which[i] % len(loras)], int(out_lens[i]))
    slots = max_loras if n_adapters else 1
    bound = int(np.ceil(sum(per_adapter_max.values()) / slots)) if n_adapters else int(out_lens.max())
    rows = np.array(rec.rows)
    result = {
        "case": f"lora{n_adapters}" if n_adapters else "base", "max_loras": max_loras if n_adapters else 0,
        "requests": n, "output_tokens": int(out_lens.sum()), "steps": rec.step, "bound": max(bound, 1),
        "rows_per_step": round(float(rows.mean()), 1), "decode_rows_per_step": round(float(np.mean(rec.decode_rows)), 1),
        "p50_rows": int(np.median(rows)), "adapters_per_step": round(float(np.mean(rec.adapters)), 2),
        "steps_per_request": round(float(np.mean([finish[r] - rec.first[r] + 1 for r in finish])), 1),
        "mean_output": round(float(out_lens.mean()), 1), "slot_loads": rec.loads,
        "wait_mean": round(float(waits.mean()), 1), "wait_p95": int(np.percentile(waits, 95)),
        "wait_max": int(waits.max()), "cold_requests": int(sum(cold_at_arrival.values())),
        "cold_wait_max": int(cold.max()),
        "host_us_per_step": round(1e6 * float(np.mean(rec.host_s)), 1) if rec.host_s else None,
        "host_us_per_step_without_tables": (round(1e6 * float(np.mean(rec.host_s) - np.mean(rec.tables_s)), 1)
                                            if rec.host_s else None),
        "wall_s": round(wall, 2),
    }
    return result


def _adapter_digest(engine: Any, rid: str) -> str | None:
    req = engine.core.scheduler.requests.get(rid)
    return None if req is None else _digest(req.extensions)


def host_table_cost(rows: int, slots: int, repeat: int = 2000) -> dict[str, float]:
    """Microseconds per step of the host work that builds the LoRA step tables: the slot map and
    TritonLoRAOps.host_tables (numpy), for ``rows`` decode rows over ``slots`` slots."""
    import torch
    from vllm_lora.layers import LoRABatch
    from vllm_lora.ops.triton_ops import TritonLoRAOps

    ops = TritonLoRAOps()
    rng = np.random.default_rng(0)
    per_req = rng.integers(0, slots, size=rows)
    counts = np.ones(rows, dtype=np.int64)
    batch = LoRABatch(ops, torch.full((8192,), -1, dtype=torch.int64), torch.ones(slots), torch.float32)
    batch.tables = tuple(torch.from_numpy(t.copy()) for t in ops.host_tables(np.full(8192, -1), slots, 8192))

    def timeit(fn: Any) -> float:
        fn()
        t = time.perf_counter()
        for _ in range(repeat):
            fn()
        return 1e6 * (time.perf_counter() - t) / repeat

    def slot_map() -> np.ndarray:
        out = np.full(8192, -1, dtype=np.int64)
        out[:rows] = np.repeat(per_req, counts)
        return out[:rows]

    step_rows = slot_map()
    return {
        "rows": rows, "slots": slots,
        "slot_map_us": round(timeit(slot_map), 1),
        "host_tables_us": round(timeit(lambda: ops.host_tables(step_rows, slots, 8192)), 1),
        "load_step_us": round(timeit(lambda: batch.load_step(step_rows, lambda t: t)), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="reference")
    ap.add_argument("--num-prompts", type=int, default=256)
    ap.add_argument("--min-input", type=int, default=12)
    ap.add_argument("--max-input", type=int, default=128)
    ap.add_argument("--min-output", type=int, default=12)
    ap.add_argument("--max-output", type=int, default=128)
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--budget", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", nargs="+", default=["base", "lora4", "lora16"])
    ap.add_argument("--stream", action="store_true", help="requests arrive over time; hot and cold adapters")
    ap.add_argument("--rate", type=float, default=2.0, help="--stream: requests added per step")
    ap.add_argument("--cold-share", type=float, default=0.05, help="--stream: share of requests of cold adapters")
    ap.add_argument("--lora-kw", type=json.loads, default={}, help="extra LoRA engine arguments (JSON)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import logging

    logging.disable(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tmp = tempfile.mkdtemp(prefix="lora-sched-")
    model_dir = os.path.join(tmp, "model")
    hf_config = tiny_model(model_dir)
    adapter_dirs = []
    for i in range(16):
        adapter_dirs.append(os.path.join(tmp, f"a{i}"))
        write_adapter(adapter_dirs[-1], hf_config, 16, seed=i)
    results = []
    for case in args.cases:
        n_adapters = 0 if case == "base" else int(case.removeprefix("lora"))
        r = run_case(args, model_dir, hf_config, n_adapters, min(n_adapters, 8) or 1, adapter_dirs)
        results.append(r)
        print(json.dumps(r), flush=True)
    base = next((r for r in results if r["case"] == "base"), None)
    for r in results:
        line = (f"{r['case']:>7} max_loras={r['max_loras']}: {r['steps']} steps (bound {r['bound']}), "
                f"{r['rows_per_step']} rows/step ({r['decode_rows_per_step']} decode), {r['adapters_per_step']} "
                f"adapters/step, {r['slot_loads']} slot loads, wait mean {r['wait_mean']} / p95 {r['wait_p95']} / "
                f"max {r['wait_max']} steps (cold-at-arrival max {r['cold_wait_max']})")
        if r["host_us_per_step"] is not None:
            line += (f"; prepare_step {r['host_us_per_step']} us/step, "
                     f"{r['host_us_per_step_without_tables']} without the tables")
        if base is not None and r is not base:
            line += f"; steps x{r['steps'] / base['steps']:.2f} of base"
        print(line)
    costs = [host_table_cost(256, 16), host_table_cost(256, 8), host_table_cost(16, 4)]
    for c in costs:
        print(f"host tables, {c['rows']} rows / {c['slots']} slots: slot map {c['slot_map_us']} us, "
              f"host_tables {c['host_tables_us']} us, LoRABatch.load_step (CPU tensors) {c['load_step_us']} us")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"cases": results, "host_tables": costs}, f, indent=1)


if __name__ == "__main__":
    main()
