"""Speculative decoding on a GPU: the mechanism's ceiling and its cost, against plain decoding
measured in the same run (each configuration in its own process, so each gets the whole GPU).

Llama-3.1-8B architecture with dummy weights (bf16), greedy, 512-token random prompts, 128 output
tokens. Random weights make acceptance meaningless, so this measures:

* **ceiling**: a draft model equal to the target (``draft_model`` with the same weights: every
  draft is accepted) at batch 1, output tokens/s and TPOT vs ``k``;
* **forced-miss overhead**: a proposer whose drafts are always wrong (``forced_miss``, registered
  here in-process through ``register_proposers``) at batch 1, with the acceptance off-switch
  disabled (``min_acceptance_rate=0``: the raw cost of verifying ``k`` rejected drafts) and with
  the default policy (it backs off); the issue asks for <= 10 % of plain TPOT;
* **under load**: 64 concurrent requests, speculation on (default policy: off above
  ``disable_by_batch_size``) vs off; the issue asks for >= 0.97x;
* **EAGLE mechanics**: random-weight EAGLE-1 and EAGLE-3 heads (``vllm_core.spec_decode.random_heads``,
  written once per run for the model's config, bf16, sharing the target's embedding; EAGLE-3 with a
  32k draft vocabulary) at batch 1 with the off-switch disabled: their drafts are ~never accepted,
  so TPOT vs plain is the cost of a drafting step (head passes, hidden-state capture, verifying k
  rejected drafts), not a speed-up; and EAGLE-3 at 64 requests (the target keeps writing the
  hidden-state cache while the policy drafts nothing).

    python benchmarks/spec_decode_gpu.py [--model benchmarks/configs/llama-3.1-8b] [--quick] [--save-result f.json]

It prints one line per configuration and a JSON summary with the ratios to plain.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

MISS_TOKEN = 3
"""Every draft of ``forced_miss``: the target's argmax is almost never this one token."""


def register_forced_miss() -> None:
    """``forced_miss``: every draft is ``MISS_TOKEN`` (also used by spec_decode_overhead.py)."""
    from vllm_core import hookimpl
    from vllm_core.plugins.api import Proposer
    from vllm_core.plugins.manager import register_plugin

    class ForcedMiss(Proposer):
        method = "forced_miss"

        def propose_step(self, rows: Sequence[Any], new_tokens: Sequence[Sequence[int]],
                         max_drafts: Sequence[int]) -> list[list[int]]:
            return [[MISS_TOKEN] * k for k in max_drafts]

    class Plugin:
        VLLM_CORE_PLUGIN_API = ">=1.0,<2"

        @hookimpl
        def register_proposers(self, register: Any) -> None:
            register(ForcedMiss)

    register_plugin(Plugin(), "spec-decode-bench")


def write_eagle_heads(model: str) -> dict[str, str]:
    """Random EAGLE-1 and EAGLE-3 heads for ``model``'s config (bf16, the target's embedding),
    in a temporary directory."""
    import tempfile

    import torch
    from transformers import AutoConfig

    from vllm_core.spec_decode.random_heads import save_eagle_head

    config = AutoConfig.from_pretrained(model)
    root = tempfile.mkdtemp(prefix="eagle-heads-")
    return {
        "eagle": save_eagle_head(f"{root}/eagle", config, "eagle", scale=0.02, own_embedding=False,
                                 dtype=torch.bfloat16),
        "eagle3": save_eagle_head(f"{root}/eagle3", config, "eagle3", scale=0.02, own_embedding=False,
                                  draft_vocab_size=min(32000, config.vocab_size), dtype=torch.bfloat16),
    }


def run_one(args: argparse.Namespace, spec: dict[str, Any] | None, concurrency: int) -> dict[str, Any]:
    """One configuration, in this process: TPOT at batch 1 or throughput at ``concurrency``."""
    import random

    from vllm_core import LLM, SamplingParams

    register_forced_miss()
    llm = LLM(args.model, load_format="dummy", dtype="bfloat16", max_model_len=2048, speculative_config=spec,
              max_num_seqs=max(concurrency, 8), use_tqdm_on_load=False)
    platform = llm.llm_engine.platform
    vocab = llm.llm_engine.loaded.hf_config.vocab_size
    rng = random.Random(0)

    def prompts(n: int) -> list[dict[str, list[int]]]:
        return [{"prompt_token_ids": [rng.randrange(10, vocab) for _ in range(args.input_len)]} for _ in range(n)]

    def timed(n: int, out_len: int) -> float:
        params = SamplingParams(temperature=0.0, max_tokens=out_len, ignore_eos=True, detokenize=False)
        batch = prompts(n)
        platform.synchronize()
        start = time.perf_counter()
        llm.generate(batch, params, use_tqdm=False)
        platform.synchronize()
        return time.perf_counter() - start

    timed(min(concurrency, 4), 16)  # warm-up
    ext = llm.llm_engine.core.runner.extensions.get("speculative_decoding")
    before = ext.stats() if ext is not None else None
    result: dict[str, Any] = {"concurrency": concurrency, "spec": spec}
    if concurrency == 1:
        tpots = []
        for _ in range(args.iters):
            prefill = timed(1, 1)
            total = timed(1, args.output_len)
            tpots.append((total - prefill) / (args.output_len - 1))
        tpot = statistics.median(tpots)
        result.update(tpot_ms=round(1000 * tpot, 3), decode_tok_s=round(1 / tpot, 2))
    else:
        elapsed = timed(concurrency, args.output_len)
        result.update(output_tok_s=round(concurrency * args.output_len / elapsed, 1), elapsed_s=round(elapsed, 3))
    if ext is not None and before is not None:
        after = ext.stats()
        drafts = after.num_drafts - before.num_drafts
        drafted = after.num_draft_tokens - before.num_draft_tokens
        accepted = after.num_accepted_tokens - before.num_accepted_tokens
        result.update(acceptance_rate=round(accepted / drafted, 4) if drafted else None,
                      mean_acceptance_length=round(1 + accepted / drafts, 3) if drafts else None,
                      steps_off_by_batch=ext.policy.num_steps_off_by_batch)
    from vllm_core.benchmarks.engine import device_name

    result["device"] = device_name(platform.device().type)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="benchmarks/configs/llama-3.1-8b")
    ap.add_argument("--input-len", type=int, default=512)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="k = 4 only, fewer configurations (< 5 min on an H100)")
    ap.add_argument("--only", default=None, help="comma-separated configuration names to run (plain always runs; plain_c64 too when a 64-request "
                         "configuration is named)")
    ap.add_argument("--save-result", default=None)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one is not None:
        job = json.loads(args.one)
        print("RESULT " + json.dumps(run_one(args, job["spec"], job["concurrency"])), flush=True)
        return

    ks = [4] if args.quick else [1, 2, 4, 6, 8]
    wanted_names = set(args.only.split(",")) if args.only else None
    # random heads take a while to write for an 8B config: only when an EAGLE job runs
    heads = (write_eagle_heads(args.model) if wanted_names is None or any(n.startswith("eagle") for n in wanted_names)
             else {"eagle": "", "eagle3": ""})
    eagle = {"method": "eagle", "model": heads["eagle"], "num_speculative_tokens": 4, "min_acceptance_rate": 0.0}
    eagle3 = {"method": "eagle3", "model": heads["eagle3"], "num_speculative_tokens": 4}
    jobs: list[tuple[str, dict[str, Any] | None, int]] = [
        ("plain", None, 1), ("eagle_k4_raw", eagle, 1), ("eagle3_k4_raw", {**eagle3, "min_acceptance_rate": 0.0}, 1),
    ]
    for k in ks:
        jobs.append((f"self_k{k}", {"method": "draft_model", "model": args.model, "num_speculative_tokens": k}, 1))
    miss = {"method": "forced_miss", "num_speculative_tokens": 4}
    jobs += [("miss_k4_raw", {**miss, "min_acceptance_rate": 0.0}, 1), ("miss_k4_policy", miss, 1),
             ("plain_c64", None, 64),
             ("ngram_c64", {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4}, 64),
             ("eagle3_c64", eagle3, 64)]
    if not args.quick:
        jobs += [("eagle_k4_policy", {**eagle, "min_acceptance_rate": 0.1}, 1),
                 ("miss_c64_raw_batch", {**miss, "min_acceptance_rate": 0.0}, 64)]
    if args.only:
        wanted = set(args.only.split(",")) | {"plain"}
        if any(conc == 64 for name, _, conc in jobs if name in wanted):
            wanted.add("plain_c64")
        jobs = [j for j in jobs if j[0] in wanted]
    results: dict[str, Any] = {}
    for name, spec, conc in jobs:
        started = time.perf_counter()
        cmd = [sys.executable, __file__, "--model", args.model, "--input-len", str(args.input_len),
               "--output-len", str(args.output_len), "--iters", str(args.iters),
               "--one", json.dumps({"spec": spec, "concurrency": conc})]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{name}: failed\n{proc.stderr[-3000:]}", flush=True)
            continue
        results[name] = json.loads(line[len("RESULT "):])
        results[name]["job_wall_s"] = round(time.perf_counter() - started, 1)
        print(name, results[name], flush=True)

    plain, plain64 = results.get("plain"), results.get("plain_c64")
    summary: dict[str, Any] = {}
    if plain:
        for name, r in results.items():
            if r["concurrency"] == 1 and name != "plain":
                summary[name] = {"speedup_vs_plain": round(plain["tpot_ms"] / r["tpot_ms"], 3),
                                 "tpot_overhead_vs_plain": round(r["tpot_ms"] / plain["tpot_ms"] - 1, 4),
                                 "acceptance_rate": r.get("acceptance_rate"),
                                 "mean_acceptance_length": r.get("mean_acceptance_length")}
    if plain64:
        for name, r in results.items():
            if r["concurrency"] == 64 and name != "plain_c64":
                summary[name] = {"throughput_vs_plain": round(r["output_tok_s"] / plain64["output_tok_s"], 3),
                                 "steps_off_by_batch": r.get("steps_off_by_batch")}
    print(json.dumps({"results": results, "summary": summary}, indent=1))
    if args.save_result:
        with open(args.save_result, "w") as f:
            json.dump({"results": results, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
