"""The memory-bandwidth bound of a throughput workload: every decode step reads all weights once
and the KV of every running sequence; output tok/s can be no higher than
``total output tokens / (total bytes / copy bandwidth)``. Prefill compute is ignored (optimistic).

    python benchmarks/bandwidth_bound.py benchmarks/configs/qwen3-0.6b --bandwidth 4.278e12
"""

from __future__ import annotations

import argparse
import json

from vllm_core.benchmarks.datasets import RandomDataset


def param_count(cfg: dict) -> int:
    h, inter, layers, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    hd = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    per_layer = h * (q + 2 * kv) + q * h + 3 * h * inter + 2 * h
    lm_head = 0 if cfg.get("tie_word_embeddings") else vocab * h
    # the embedding table is gathered, not streamed: only the LM head counts as read per step
    return layers * per_layer + h + (lm_head or vocab * h)


def bound(cfg: dict, reqs: list[tuple[int, int]], bandwidth: float, dtype_bytes: int = 2) -> dict:
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    kv_per_token = 2 * cfg["num_key_value_heads"] * hd * dtype_bytes * cfg["num_hidden_layers"]
    weights = param_count(cfg) * dtype_bytes
    total = 0
    for step in range(max(o for _, o in reqs)):
        active = [(p, o) for p, o in reqs if o > step]
        total += weights + sum((p + step) * kv_per_token for p, _ in active)
    out_tokens = sum(o for _, o in reqs)
    seconds = total / bandwidth
    return {"weight_bytes": weights, "kv_bytes_per_token": kv_per_token, "total_bytes": total,
            "seconds": seconds, "output_tok_per_s_bound": out_tokens / seconds, "output_tokens": out_tokens}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config_dir")
    ap.add_argument("--bandwidth", type=float, required=True, help="bytes/s (benchmarks/bandwidth.py)")
    ap.add_argument("--num-prompts", type=int, default=256)
    ap.add_argument("--input-len-range", type=int, nargs=2, default=[100, 1024])
    ap.add_argument("--output-len-range", type=int, nargs=2, default=[100, 1024])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with open(f"{args.config_dir}/config.json") as f:
        cfg = json.load(f)
    ds = RandomDataset(tuple(args.input_len_range), tuple(args.output_len_range), args.seed)
    reqs = [(r.prompt_len, r.expected_output_len) for r in ds.sample(args.num_prompts, 1000)]
    print(json.dumps(bound(cfg, reqs, args.bandwidth)))


if __name__ == "__main__":
    main()
