"""Where one engine step's time goes, and how long the GPU sits idle per step.

Runs the throughput workload through ``LLMEngine.step()``; for a window of steps in steady
decode it records the host phases (schedule, execute incl. the wait for sampled tokens, update,
output processing) and, under ``torch.profiler``, the GPU's busy time (union of kernel
intervals). GPU idle per step = step wall time - GPU busy time. ``execute`` is the launch (plus the wait
for sampled tokens when scheduling is synchronous); ``step_total`` is the whole ``step()``.

    python benchmarks/step_profile.py benchmarks/configs/qwen3-0.6b --num-prompts 256
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def busy_seconds(prof: torch.profiler.profile) -> float:
    """Union of GPU kernel/memcpy intervals in the trace, in seconds."""
    spans = []
    for evt in prof.events():
        if evt.device_type == torch.autograd.DeviceType.CUDA and evt.time_range.elapsed_us() > 0:
            spans.append((evt.time_range.start, evt.time_range.end))
    spans.sort()
    total, cur_s, cur_e = 0.0, None, None
    for s, e in spans:
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        total += cur_e - cur_s
    return total / 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config_dir")
    ap.add_argument("--num-prompts", type=int, default=256)
    ap.add_argument("--input-len-range", type=int, nargs=2, default=[100, 1024])
    ap.add_argument("--output-len", type=int, default=300)
    ap.add_argument("--warm-steps", type=int, default=40)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--save-result", default=None)
    args = ap.parse_args()

    from vllm_core import LLM, SamplingParams
    from vllm_core.benchmarks.datasets import RandomDataset

    llm = LLM(args.config_dir, load_format="dummy", dtype="bfloat16", max_model_len=args.max_model_len,
              skip_tokenizer_init=True, use_tqdm_on_load=False)
    engine = llm.llm_engine
    vocab = engine.loaded.hf_config.vocab_size
    reqs = RandomDataset(tuple(args.input_len_range), (args.output_len, args.output_len), 0).sample(args.num_prompts, vocab)
    params = SamplingParams(temperature=0.6, max_tokens=args.output_len, ignore_eos=True, detokenize=False)
    for i, r in enumerate(reqs):
        engine.add_request(str(i), {"prompt_token_ids": r.prompt_token_ids}, params)
    core = engine.core
    phases = {"schedule": 0.0, "execute": 0.0, "update": 0.0, "output": 0.0}

    def timed_step() -> int:
        """One ``LLMEngine.step()``, timed as a whole (with async scheduling the phases overlap);
        the phases are timed separately by wrapping the scheduler and the runner."""
        t0 = time.perf_counter()
        engine.step()
        phases["output"] += time.perf_counter() - t0
        return core.scheduler.num_running

    def timer(name: str, fn):  # type: ignore[no-untyped-def]
        def wrapped(*a, **k):  # type: ignore[no-untyped-def]
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases[name] += time.perf_counter() - t
        return wrapped

    core.scheduler.schedule = timer("schedule", core.scheduler.schedule)
    core.scheduler.update_from_output = timer("update", core.scheduler.update_from_output)
    core.runner.execute_async = timer("execute", core.runner.execute_async)

    for _ in range(args.warm_steps):  # through the prefills into steady decode
        timed_step()
    for k in phases:
        phases[k] = 0.0
    torch.cuda.synchronize()
    batch_sizes = []
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(args.steps):
            batch_sizes.append(timed_step())
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    busy = busy_seconds(prof)
    res = {
        "device": torch.cuda.get_device_name(), "steps": args.steps, "mean_batch": sum(batch_sizes) / len(batch_sizes),
        "step_ms": 1e3 * wall / args.steps, "gpu_busy_ms_per_step": 1e3 * busy / args.steps,
        "gpu_idle_ms_per_step": 1e3 * (wall - busy) / args.steps, "gpu_idle_fraction": 1 - busy / wall,
        "async_scheduling": core.scheduler.async_scheduling,
        "host_ms_per_step": {("step_total" if k == "output" else k): 1e3 * v / args.steps for k, v in phases.items()},
    }
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15, max_name_column_width=60)
    res["top_kernels"] = table.splitlines()
    print(json.dumps({k: v for k, v in res.items() if k != "top_kernels"}, indent=1))
    print(table)
    if args.save_result:
        with open(args.save_result, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
