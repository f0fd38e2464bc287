"""transformers continuous batching (``generate_batch``, paged attention) on random weights of a
config: the peer of ``vllm-core bench throughput`` on the same workload shape.

    python benchmarks/hf_baseline.py CONFIG_DIR --num-prompts 32 --seed 0 --save-result out.json
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("config_dir")
    ap.add_argument("--num-prompts", type=int, default=32)
    ap.add_argument("--input-len-range", type=int, nargs=2, default=[100, 1024])
    ap.add_argument("--output-len", type=int, default=560, help="one output length for all (generate_batch has one config)")
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save-result", default=None)
    args = ap.parse_args()

    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.generation import GenerationConfig

    cfg = AutoConfig.from_pretrained(args.config_dir)
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="paged|sdpa").cuda().eval()
    rng = random.Random(args.seed)
    prompts = [[rng.randrange(100, cfg.vocab_size - 100) for _ in range(rng.randint(*args.input_len_range))]
               for _ in range(args.num_prompts)]
    gen = GenerationConfig(max_new_tokens=args.output_len, min_new_tokens=args.output_len, do_sample=args.temperature > 0,
                           temperature=args.temperature, eos_token_id=-1, pad_token_id=0, use_cuda_graph=True)
    model.generate_batch(inputs=prompts[:4], generation_config=GenerationConfig(
        max_new_tokens=8, do_sample=False, eos_token_id=-1, pad_token_id=0), progress_bar=False)
    torch.cuda.synchronize()
    start = time.perf_counter()
    results = model.generate_batch(inputs=prompts, generation_config=gen, progress_bar=False)
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    out_tokens = sum(len(r.generated_tokens) for r in results.values())
    res = {"engine": "transformers-generate_batch", "device": torch.cuda.get_device_name(),
           "num_prompts": args.num_prompts, "output_tokens": out_tokens, "elapsed_s": elapsed,
           "output_tok_per_s": out_tokens / elapsed, "args": vars(args)}
    print(json.dumps(res))
    if args.save_result:
        with open(args.save_result, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
