"""Where the wall time of a whole throughput run goes: prefill, mixed and decode steps, host vs GPU.

Runs the ``bench throughput`` workload (warm-up, then one ``generate()``) with CUDA events
around every step's launch (``ModelRunner.execute_async``). On the GPU's timeline each step owns
the interval from the previous step's end event to its own: the part before its start event
is idle (the GPU waited for the host to launch), the rest is its span (kernels, plus any gaps
inside a host-bound eager launch). Steps are classed as ``prefill`` (no decode rows), ``mixed``
and ``decode`` (graph replay or eager). Per class it reports steps, timeline seconds, idle
seconds, the host's launch time, and the mean batch; plus the share of the whole run.

    python benchmarks/phase_profile.py benchmarks/configs/qwen3-0.6b --save-result phases.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from typing import Any

import torch

WEIGHT_BYTES, KV_BYTES, BANDWIDTH = 1.192e9, 114688, 4.25e12
"""Qwen3-0.6B's weights read per step (bandwidth_bound.py), KV bytes per cached token, and the
H200's measured copy bandwidth: the per-phase ``bound_s`` is that of the steps as scheduled."""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config_dir")
    ap.add_argument("--num-prompts", type=int, default=256)
    ap.add_argument("--input-len-range", type=int, nargs=2, default=[100, 1024])
    ap.add_argument("--output-len-range", type=int, nargs=2, default=[100, 1024])
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--max-num-batched-tokens", type=int, default=None)
    ap.add_argument("--enforce-eager", action="store_true")
    ap.add_argument("--save-result", default=None)
    ap.add_argument("--host-profile", action="store_true", help="cProfile the launches of mixed steps")
    ap.add_argument("--kernel-table", action="store_true",
                    help="afterwards, profile the kernels of 64 more prompts' prefill (max_tokens=2)")
    args = ap.parse_args()

    from vllm_core import LLM
    from vllm_core.benchmarks.datasets import RandomDataset
    from vllm_core.benchmarks.throughput import run_throughput, warmup

    kw: dict[str, Any] = {}
    if args.max_num_batched_tokens:
        kw["max_num_batched_tokens"] = args.max_num_batched_tokens
    llm = LLM(args.config_dir, load_format="dummy", dtype="bfloat16", max_model_len=args.max_model_len,
              skip_tokenizer_init=True, use_tqdm_on_load=False, seed=0, enforce_eager=args.enforce_eager, **kw)
    engine = llm.llm_engine
    vocab = engine.loaded.hf_config.vocab_size
    ds = RandomDataset(tuple(args.input_len_range), tuple(args.output_len_range), 0)
    warmup(llm, ds, vocab, 0.6)
    reqs = ds.sample(args.num_prompts, vocab)

    runner = engine.core.runner
    records: list[dict[str, Any]] = []
    launch = runner.execute_async
    host: dict[str, float] = defaultdict(float)
    """Host seconds of the launch's parts in the step being launched."""

    def timed(name: str, fn):  # type: ignore[no-untyped-def]
        def wrapped(*a, **k):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                host[name] += time.perf_counter() - t
        return wrapped

    import vllm_core.worker.model_runner as mr

    prepare, forward, sampler = mr.prepare_inputs, runner.model.forward, runner.sampler
    mr.prepare_inputs = timed("prepare", prepare)
    runner.model.forward = timed("forward", forward)  # type: ignore[method-assign]
    runner.sampler = timed("sample", sampler)  # type: ignore[assignment]

    def timed_launch(output):  # type: ignore[no-untyped-def]
        if output.is_empty:
            return launch(output)
        q = [s.num_tokens for s in output.scheduled]
        num_dec = sum(1 for n in q if n == 1)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        host.clear()
        kind = "prefill" if num_dec == 0 else ("decode" if num_dec == len(q) else "mixed")
        profiling = args.host_profile and kind == "mixed" and len(records) > 2
        if profiling:
            cprof.enable()
        t0 = time.perf_counter()
        start.record()
        res = launch(output)
        end.record()
        if profiling:
            cprof.disable()
        records.append({"kind": kind, "reqs": len(q), "tokens": sum(q), "decodes": num_dec,
                        "kv_tokens": sum(s.start_pos + s.num_tokens for s in output.scheduled),
                        "launch_s": time.perf_counter() - t0, "t_host": t0, "start": start, "end": end, **host})
        return res

    import cProfile
    import pstats

    cprof = cProfile.Profile()
    runner.execute_async = timed_launch  # type: ignore[method-assign]
    import gc

    gc_pauses: list[float] = []
    gc_start = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            gc_pauses.append(time.perf_counter() - gc_start[0])

    gc.callbacks.append(on_gc)
    base = torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    base.record()
    result = run_throughput(llm, reqs, 0.6)
    torch.cuda.synchronize()
    gc.callbacks.remove(on_gc)

    prev_end = 0.0
    agg: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    steps = []
    for r in records:
        s, e = base.elapsed_time(r["start"]) / 1e3, base.elapsed_time(r["end"]) / 1e3
        kind = r["kind"]
        if kind == "decode":
            kind = "decode_small" if r["reqs"] <= 64 else "decode_large"
        a = agg[kind]
        a["steps"] += 1
        a["timeline_s"] += e - prev_end
        a["idle_s"] += max(s - prev_end, 0.0)
        a["span_s"] += e - s
        a["launch_s"] += r["launch_s"]
        a["reqs"] += r["reqs"]
        a["tokens"] += r["tokens"]
        a["kv_tokens"] += r["kv_tokens"]
        for part in ("prepare", "forward", "sample"):
            a[part + "_s"] += r.get(part, 0.0)
        steps.append([kind, r["reqs"], r["tokens"], round(1e3 * (e - prev_end), 3), round(1e3 * max(s - prev_end, 0), 3),
                      round(1e3 * r["launch_s"], 3)] + [round(1e3 * r.get(p, 0.0), 3) for p in ("prepare", "forward", "sample")])
        prev_end = e
    total = prev_end
    table = {}
    for kind, a in sorted(agg.items()):
        n = a["steps"]
        table[kind] = {"steps": int(n), "timeline_s": round(a["timeline_s"], 4), "share": round(a["timeline_s"] / total, 4),
                       "idle_s": round(a["idle_s"], 4), "ms_per_step": round(1e3 * a["timeline_s"] / n, 3),
                       "idle_ms_per_step": round(1e3 * a["idle_s"] / n, 3),
                       "launch_ms_per_step": round(1e3 * a["launch_s"] / n, 3),
                       "prepare_ms_per_step": round(1e3 * a["prepare_s"] / n, 3),
                       "forward_ms_per_step": round(1e3 * a["forward_s"] / n, 3),
                       "sample_ms_per_step": round(1e3 * a["sample_s"] / n, 3),
                       "bound_s": round(a["steps"] * WEIGHT_BYTES / BANDWIDTH + a["kv_tokens"] * KV_BYTES / BANDWIDTH, 4),
                       "mean_reqs": round(a["reqs"] / n, 1), "mean_tokens": round(a["tokens"] / n, 1)}
    res = {"device": torch.cuda.get_device_name(), "elapsed_s": result.elapsed_time,
           "output_tok_per_s": result.output_tokens_per_second, "gpu_timeline_s": total, "phases": table,
           "gc": {"collections": len(gc_pauses), "total_s": sum(gc_pauses), "max_s": max(gc_pauses, default=0.0)},
           "steps": steps}
    print(json.dumps({k: v for k, v in res.items() if k != "steps"}, indent=1))
    if args.save_result:
        with open(args.save_result, "w") as f:
            json.dump(res, f)
    if args.host_profile:
        pstats.Stats(cprof).sort_stats("tottime").print_stats(25)
    if args.kernel_table:
        from vllm_core.benchmarks.throughput import _prompts, sampling_params

        runner.execute_async = launch  # type: ignore[method-assign]
        more = RandomDataset(tuple(args.input_len_range), (2, 2), 1).sample(64, vocab)
        torch.cuda.set_sync_debug_mode("warn")  # every host-device synchronisation in the steps
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            llm.generate(_prompts(more), sampling_params(2, 0.6), use_tqdm=False)
        torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=20, max_name_column_width=70))


if __name__ == "__main__":
    main()
