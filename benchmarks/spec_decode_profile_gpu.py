"""Where a forced-miss verification step's time goes on a GPU, against a plain decode step.

``plain`` and ``miss_k4_raw`` (as in ``spec_decode_gpu.py``: k = 4 drafts that are always
rejected, the off-switch disabled), batch 1, Llama-3.1-8B architecture with dummy weights, each
in its own process. Per configuration:

* TPOT as ``spec_decode_gpu.py`` measures it (generate 1 token vs ``--output-len`` tokens);
* the host phases of every steady step (``spec_decode_overhead.PhaseClock``: schedule,
  prepare_inputs, forward launch, sampling, verify incl. its wait for the tokens, propose,
  update, outputs ...), mean microseconds per step;
* ``torch.profiler`` over ``--profile-steps`` steady steps: wall time per step, GPU busy time per
  step (union of kernel and copy intervals) and so GPU idle per step, and the top operators by
  self CPU time and by self CUDA time (tables written to ``$OUT``).

    python benchmarks/spec_decode_profile_gpu.py [--model benchmarks/configs/llama-3.1-8b] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from typing import Any

CONFIGS: dict[str, dict[str, Any] | None] = {
    "plain": None,
    "miss_k4_raw": {"method": "forced_miss", "num_speculative_tokens": 4, "min_acceptance_rate": 0.0},
}


def busy_seconds(events: Any) -> float:
    """Union of the device's kernel / copy intervals among profiler ``events``, in seconds."""
    import torch

    spans = sorted(
        (e.time_range.start, e.time_range.end) for e in events
        if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.elapsed_us() > 0
    )
    total, cur_s, cur_e = 0.0, None, None
    for s, e in spans:
        if cur_e is None or s > cur_e:
            if cur_e is not None and cur_s is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None and cur_s is not None:
        total += cur_e - cur_s
    return total / 1e6


def table(prof: Any, key: str, rows: int = 20) -> str:
    for k in (key, key.replace("cuda", "device")):
        try:
            return str(prof.key_averages().table(sort_by=k, row_limit=rows, max_name_column_width=60))
        except (AttributeError, KeyError, ValueError, RuntimeError):
            continue
    return f"(no {key} column)"


def run_one(args: argparse.Namespace, name: str) -> dict[str, Any]:
    import torch
    from spec_decode_overhead import PHASES, PhaseClock, instrument, register_forced_miss, summarize

    from vllm_core import LLM, SamplingParams

    register_forced_miss()
    llm = LLM(args.model, load_format="dummy", dtype="bfloat16", max_model_len=2048, speculative_config=CONFIGS[name],
              max_num_seqs=8, use_tqdm_on_load=False)
    engine = llm.llm_engine
    platform = engine.platform
    vocab = engine.loaded.hf_config.vocab_size
    rng = random.Random(0)
    clock = PhaseClock()
    step = instrument(llm, clock)

    def generate(out_len: int, on_step: Any = None) -> float:
        params = SamplingParams(temperature=0.0, max_tokens=out_len, ignore_eos=True, detokenize=False)
        engine.add_request(engine.next_request_id(),
                           {"prompt_token_ids": [rng.randrange(10, vocab) for _ in range(args.input_len)]}, params)
        platform.synchronize()
        start, n = time.perf_counter(), 0
        while engine.has_unfinished_requests():
            if on_step is not None:
                on_step(n)
            step()
            n += 1
        platform.synchronize()
        return time.perf_counter() - start

    generate(16)  # warm-up
    tpots = []
    for _ in range(args.iters):
        prefill = generate(1)
        tpots.append((generate(args.output_len) - prefill) / (args.output_len - 1))
    kind = "decode" if CONFIGS[name] is None else "verify"
    clock.steps.clear()
    generate(args.output_len)
    phases = summarize(clock.steps, kind)

    first, last = 8, 8 + args.profile_steps
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA])
    marks: dict[str, float] = {}

    def on_step(n: int) -> None:
        if n == first:
            platform.synchronize()
            prof.start()
            marks["start"] = time.perf_counter()
        elif n == last:
            platform.synchronize()
            marks["end"] = time.perf_counter()
            prof.stop()

    generate(last + 4, on_step)
    if "end" not in marks:  # fewer steps than expected: the window closes where the run ended
        marks["end"] = time.perf_counter()
        prof.stop()
    wall = (marks["end"] - marks["start"]) / args.profile_steps
    busy = busy_seconds(prof.events()) / args.profile_steps
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"profile_{name}.txt"), "w") as f:
        f.write(f"{name}: {args.profile_steps} steady steps, wall {1e3 * wall:.3f} ms/step, GPU busy "
                f"{1e3 * busy:.3f} ms/step\n\n== top ops by self CPU time ==\n")
        f.write(table(prof, "self_cpu_time_total"))
        f.write("\n\n== top ops by self CUDA time ==\n")
        f.write(table(prof, "self_cuda_time_total"))
    try:
        prof.export_chrome_trace(os.path.join(args.out, f"trace_{name}.json"))
    except Exception:  # noqa: BLE001 - the trace is a bonus
        pass
    from vllm_core.benchmarks.engine import device_name

    return {"name": name, "device": device_name(platform.device().type),
            "tpot_ms": round(1e3 * statistics.median(tpots), 3),
            "profiled_wall_ms_per_step": round(1e3 * wall, 3), "gpu_busy_ms_per_step": round(1e3 * busy, 3),
            "gpu_idle_ms_per_step": round(1e3 * (wall - busy), 3),
            "host_phases_us_per_step": {k: phases.get(k) for k in (*PHASES, "other", "host", "step", "steps")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="benchmarks/configs/llama-3.1-8b")
    ap.add_argument("--input-len", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--profile-steps", type=int, default=12)
    ap.add_argument("--out", default=os.environ.get("OUT", "/tmp/spec_profile"))
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        print("RESULT " + json.dumps(run_one(args, args.one)), flush=True)
        return
    results: dict[str, Any] = {}
    for name in CONFIGS:
        cmd = [sys.executable, __file__, "--model", args.model, "--input-len", str(args.input_len),
               "--output-len", str(args.output_len), "--iters", str(args.iters),
               "--profile-steps", str(args.profile_steps), "--out", args.out, "--one", name]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{name}: failed\n{proc.stderr[-3000:]}", flush=True)
            continue
        results[name] = json.loads(line[len("RESULT "):])
        print(json.dumps(results[name]), flush=True)
    plain, miss = results.get("plain"), results.get("miss_k4_raw")
    summary: dict[str, Any] = {}
    if plain and miss:
        summary = {
            "tpot_overhead_vs_plain": round(miss["tpot_ms"] / plain["tpot_ms"] - 1, 4),
            "extra_ms_per_step": round(miss["tpot_ms"] - plain["tpot_ms"], 3),
            "extra_gpu_busy_ms_per_step": round(miss["gpu_busy_ms_per_step"] - plain["gpu_busy_ms_per_step"], 3),
            "extra_gpu_idle_ms_per_step": round(miss["gpu_idle_ms_per_step"] - plain["gpu_idle_ms_per_step"], 3),
        }
    print(json.dumps({"summary": summary}, indent=1))
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "spec_decode_profile_gpu.json"), "w") as f:
        json.dump({"results": results, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
