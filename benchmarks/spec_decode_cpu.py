"""n-gram speculative decoding vs plain decoding on the cpu platform, in the same run.

SmolLM2-135M-Instruct (real weights, the embedded default model), one stream at a time, greedy,
256 output tokens, on workloads that copy their input: "repeat this paragraph with an edit" and
"rename a variable in this function", each with an input shorter than the output and one longer. For each workload: output tokens/s without and with
speculation (best of ``--repeat`` alternating runs), their ratio, the mean acceptance length
(tokens per verified step) and whether the tokens are identical (they must be).

    python benchmarks/spec_decode_cpu.py [--k 4] [--repeat 2] [--save-result out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

PARAGRAPH = (
    "The old cat lived in a small house at the end of the street. Every morning the cat walked to the "
    "bakery, where the baker gave the cat a piece of bread and a bowl of milk. The children of the street "
    "loved the cat and called it Captain, because the cat sat on the wall like a captain on his ship. In "
    "winter the cat slept by the fire in the bakery, and in summer the cat slept in the shade of the big "
    "tree in the square. When the baker grew old, the cat stayed with him every day, and the whole street "
    "said that the cat was the best friend the baker ever had."
)
CODE = '''def summarize(orders):
    total = 0
    count = 0
    for order in orders:
        if order.status == "paid":
            total += order.amount
            count += 1
    average = total / count if count else 0
    print("orders:", count, "total:", total, "average:", average)
    return {"count": count, "total": total, "average": average}
'''
LONG_PARAGRAPH = PARAGRAPH + (
    " The baker had a daughter called Anna, who came to the bakery every Sunday with her two sons. The boys "
    "played with the cat in the garden behind the bakery, and the cat followed them up the hill to the old "
    "church and back again. Anna said that the cat knew the way better than the boys did. One cold night in "
    "December the fire in the bakery went out, and the cat woke the baker by sitting on his chest until he "
    "opened his eyes. The baker lit the fire again, made a pot of tea and gave the cat a little more milk than "
    "usual. The next morning the whole street heard the story, and the children brought the cat a blue collar "
    "with a small silver bell, so that everyone would know when Captain was coming down the street."
)
LONG_CODE = CODE + '''

def report(orders, currency="EUR"):
    summary = summarize(orders)
    lines = []
    lines.append("count: " + str(summary["count"]))
    lines.append("total: " + str(summary["total"]) + " " + currency)
    lines.append("average: " + str(summary["average"]) + " " + currency)
    for order in orders:
        if order.status == "paid":
            lines.append(order.customer + ": " + str(order.amount) + " " + currency)
    return "\\n".join(lines)
'''
WORKLOADS = {
    "paragraph_edit": f"Repeat the following paragraph exactly, but replace every 'cat' with 'dog':\n\n{PARAGRAPH}",
    "code_rename": f"Rename the variable `total` to `revenue` in this function and show the whole function:\n\n{CODE}",
    # inputs longer than the 256 output tokens: the whole output can be a copy
    "long_paragraph_edit": f"Repeat the following text exactly, but replace every 'cat' with 'dog':\n\n{LONG_PARAGRAPH}",
    "long_code_rename": f"Rename the variable `total` to `revenue` in this code and show all of it:\n\n{LONG_CODE}",
}
"""The first two are the original workloads: their inputs are shorter than the output (SmolLM2
copies ~130 tokens, then writes new text that no lookup can draft). The long ones copy for the
whole output."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=4, help="num_speculative_tokens")
    ap.add_argument("--lookup-min", type=int, default=2)
    ap.add_argument("--lookup-max", type=int, default=4)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=2, help="timed runs of each engine (best is reported)")
    ap.add_argument("--save-result", default=None)
    args = ap.parse_args()

    from vllm_core import LLM, SamplingParams

    common: dict[str, Any] = dict(max_model_len=2048, num_gpu_blocks_override=32, use_tqdm_on_load=False)
    spec = {"method": "ngram", "num_speculative_tokens": args.k, "prompt_lookup_min": args.lookup_min,
            "prompt_lookup_max": args.lookup_max}
    engines = {"plain": LLM(**common), "ngram": LLM(speculative_config=spec, **common)}
    params = SamplingParams(temperature=0.0, max_tokens=args.output_len, ignore_eos=True)
    warm = SamplingParams(temperature=0.0, max_tokens=8)
    for llm in engines.values():
        llm.chat([{"role": "user", "content": "Hello"}], warm, use_tqdm=False)

    spec_ext = engines["ngram"].llm_engine.core.runner.extensions.get("speculative_decoding")
    results: dict[str, Any] = {"k": args.k, "lookup": [args.lookup_min, args.lookup_max],
                               "output_len": args.output_len, "platform": engines["plain"].llm_engine.platform.name}
    for name, prompt in WORKLOADS.items():
        conv = [{"role": "user", "content": prompt}]
        best: dict[str, float] = {}
        tokens: dict[str, list[int]] = {}
        before = spec_ext.stats()
        for _ in range(args.repeat):
            for engine_name, llm in engines.items():
                start = time.perf_counter()
                out = llm.chat(conv, params, use_tqdm=False)[0].outputs[0]
                elapsed = time.perf_counter() - start
                tokens[engine_name] = list(out.token_ids)
                best[engine_name] = max(best.get(engine_name, 0.0), len(out.token_ids) / elapsed)
        after = spec_ext.stats()
        drafts = after.num_drafts - before.num_drafts
        accepted = after.num_accepted_tokens - before.num_accepted_tokens
        drafted = after.num_draft_tokens - before.num_draft_tokens
        row = {
            "plain_tok_s": round(best["plain"], 2),
            "ngram_tok_s": round(best["ngram"], 2),
            "speedup": round(best["ngram"] / best["plain"], 3),
            "mean_acceptance_length": round(1 + accepted / drafts, 3) if drafts else None,
            "acceptance_rate": round(accepted / drafted, 3) if drafted else None,
            "identical_tokens": tokens["plain"] == tokens["ngram"],
        }
        results[name] = row
        print(f"{name:15s} plain {row['plain_tok_s']:7.1f} tok/s   ngram {row['ngram_tok_s']:7.1f} tok/s   "
              f"x{row['speedup']:.2f}   acceptance length {row['mean_acceptance_length']}   "
              f"rate {row['acceptance_rate']}   identical {row['identical_tokens']}", flush=True)
    print(json.dumps(results, indent=1))
    if args.save_result:
        with open(args.save_result, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
