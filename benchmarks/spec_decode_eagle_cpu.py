"""EAGLE / EAGLE-3 mechanics on the cpu platform: plain decoding vs drafting with random heads,
in the same run.

SmolLM2-135M-Instruct (real weights, the embedded default model) as the target, one stream,
greedy, ``--output-len`` tokens of a chat answer. The heads are random
(``vllm_core.spec_decode.random_heads``, the target's embedding): their drafts are ~never
accepted, so this measures what a drafting step costs and that the output is unchanged:

* ``eagle_raw`` / ``eagle3_raw``: ``min_acceptance_rate=0``, every step drafts ``k`` tokens and
  verifies them (the cost of the head's passes, the hidden-state capture and ``k`` rejected rows);
* ``eagle3_policy``: the default off-switch, which stops drafting for a request whose drafts keep
  being rejected (the price of the mechanism when it does not pay).

    python benchmarks/spec_decode_eagle_cpu.py [--k 4] [--output-len 96] [--repeat 2] [--save-result out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from typing import Any

PROMPT = "Write a short story about a cat who lives in a bakery."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=4, help="num_speculative_tokens")
    ap.add_argument("--output-len", type=int, default=96)
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of each engine (best is reported)")
    ap.add_argument("--save-result", default=None)
    args = ap.parse_args()

    from vllm_core import LLM, SamplingParams
    from vllm_core.spec_decode.random_heads import save_eagle_head

    common: dict[str, Any] = dict(max_model_len=1024, num_gpu_blocks_override=32, use_tqdm_on_load=False)
    engines = {"plain": LLM(**common)}
    config = engines["plain"].llm_engine.loaded.hf_config
    root = tempfile.mkdtemp(prefix="eagle-heads-")
    heads = {
        "eagle": save_eagle_head(f"{root}/eagle", config, "eagle", scale=0.05, own_embedding=False),
        "eagle3": save_eagle_head(f"{root}/eagle3", config, "eagle3", scale=0.05, own_embedding=False,
                                  draft_vocab_size=16384),
    }
    specs = {
        "eagle_raw": {"method": "eagle", "model": heads["eagle"], "min_acceptance_rate": 0.0},
        "eagle3_raw": {"method": "eagle3", "model": heads["eagle3"], "min_acceptance_rate": 0.0},
        "eagle3_policy": {"method": "eagle3", "model": heads["eagle3"]},
    }
    for name, spec in specs.items():
        engines[name] = LLM(speculative_config={**spec, "num_speculative_tokens": args.k}, **common)
    conv = [{"role": "user", "content": PROMPT}]
    params = SamplingParams(temperature=0.0, max_tokens=args.output_len, ignore_eos=True)
    for llm in engines.values():
        llm.chat(conv, SamplingParams(temperature=0.0, max_tokens=8), use_tqdm=False)

    exts = {n: e.llm_engine.core.runner.extensions.get("speculative_decoding") for n, e in engines.items() if n != "plain"}
    before = {n: x.stats() for n, x in exts.items()}
    best: dict[str, float] = {}
    tokens: dict[str, list[int]] = {}
    for _ in range(args.repeat):
        for name, llm in engines.items():
            start = time.perf_counter()
            out = llm.chat(conv, params, use_tqdm=False)[0].outputs[0]
            elapsed = time.perf_counter() - start
            tokens[name] = list(out.token_ids)
            best[name] = max(best.get(name, 0.0), len(out.token_ids) / elapsed)
    results: dict[str, Any] = {"k": args.k, "output_len": args.output_len,
                               "platform": engines["plain"].llm_engine.platform.name, "plain_tok_s": round(best["plain"], 2)}
    print(f"plain           {best['plain']:7.1f} tok/s", flush=True)
    for name, ext in exts.items():
        after = ext.stats()
        drafts = after.num_drafts - before[name].num_drafts
        drafted = after.num_draft_tokens - before[name].num_draft_tokens
        accepted = after.num_accepted_tokens - before[name].num_accepted_tokens
        row = {"tok_s": round(best[name], 2), "vs_plain": round(best[name] / best["plain"], 3),
               "drafting_steps": drafts, "acceptance_rate": round(accepted / drafted, 4) if drafted else None,
               "identical_tokens": tokens[name] == tokens["plain"]}
        results[name] = row
        print(f"{name:15s} {row['tok_s']:7.1f} tok/s   x{row['vs_plain']:.3f} vs plain   drafting steps {drafts}   "
              f"acceptance {row['acceptance_rate']}   identical {row['identical_tokens']}", flush=True)
    print(json.dumps(results, indent=1))
    if args.save_result:
        with open(args.save_result, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
