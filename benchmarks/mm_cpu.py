"""Image + text requests on the cpu platform: vllm-core vs transformers ``generate``.

LLaVA architecture sized like a small deployment (benchmarks/configs/llava-vitb16-0.5b: a CLIP
ViT-B/16 tower at 224x224 = 196 image tokens, a 0.5B-sized Llama decoder), dummy weights in both
engines, greedy, one random image per request plus random text tokens. transformers runs each
request alone (batch 1, its usual offline use with images); vllm-core runs them all at once.

    python benchmarks/mm_cpu.py [--quick] [--num-requests N] [--output-len L] [--dtype float32]

Prints output tok/s of each, the ratio, and vllm-core's encoder time share; with $OUT set, writes
$OUT/mm_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mm_common import encoder_stats, image_prompts, random_image, text_twins, time_encoder  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "llava-vitb16-0.5b")


def run_engine(args: argparse.Namespace, prompts: list[dict]) -> dict:
    from vllm_core import LLM, SamplingParams

    llm = LLM(CONFIG, load_format="dummy", device="cpu", dtype=args.dtype, max_model_len=1024,
              limit_mm_per_prompt={"image": 1}, use_tqdm_on_load=False)
    params = SamplingParams(temperature=0.0, max_tokens=args.output_len, ignore_eos=True, detokenize=False)
    warm = [{"prompt_token_ids": [1, 32000, 5, 6], "multi_modal_data": {"image": random_image(224, 7)}}]
    llm.generate(warm, SamplingParams(max_tokens=2, detokenize=False), use_tqdm=False)  # warm-up
    time_encoder(llm, True)  # CPU: no device to wait for, the timing costs nothing
    runs0, enc0 = encoder_stats(llm)
    start = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    wall = time.perf_counter() - start
    runs, enc = encoder_stats(llm)
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    # the same run's text-only baseline: each image replaced by its 196 tokens of text
    start = time.perf_counter()
    twins = llm.generate(text_twins(prompts, 196, 32064), params, use_tqdm=False)
    text_wall = time.perf_counter() - start
    text_tokens = sum(len(o.outputs[0].token_ids) for o in twins)
    return {"output_tok_s": tokens / wall, "wall_s": wall, "encoder_runs": runs - runs0,
            "encoder_share": (enc - enc0) / wall, "text_only_output_tok_s": text_tokens / text_wall}


def run_hf(args: argparse.Namespace, prompts: list[dict]) -> dict:
    import torch
    from transformers import AutoConfig, AutoImageProcessor, LlavaForConditionalGeneration

    config = AutoConfig.from_pretrained(CONFIG)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).to(dtype).eval()
    processor = AutoImageProcessor.from_pretrained(CONFIG)
    n_img = (config.vision_config.image_size // config.vision_config.patch_size) ** 2

    def one(p: dict, max_new: int) -> int:
        ids = p["prompt_token_ids"]
        ids = ids[:1] + [config.image_token_index] * n_img + ids[2:]
        pixels = processor(images=[p["multi_modal_data"]["image"]], return_tensors="pt")["pixel_values"].to(dtype)
        input_ids = torch.tensor([ids])
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=pixels,
                                 max_new_tokens=max_new, min_new_tokens=max_new, do_sample=False, pad_token_id=0)
        return int(out.shape[1] - input_ids.shape[1])

    one(prompts[0], 2)  # warm-up
    start = time.perf_counter()
    tokens = sum(one(p, args.output_len) for p in prompts[: args.hf_requests])
    wall = time.perf_counter() - start
    return {"output_tok_s": tokens / wall, "wall_s": wall, "requests": min(args.hf_requests, len(prompts))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="4 requests, 16 output tokens (about 1 min on 2 cores)")
    parser.add_argument("--num-requests", type=int, default=16)
    parser.add_argument("--hf-requests", type=int, default=4, help="requests transformers runs (batch 1 each)")
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--text-len", type=int, nargs=2, default=(32, 128))
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    if args.quick:
        args.num_requests, args.hf_requests, args.output_len = 4, 2, 16
    prompts = image_prompts(args.num_requests, tuple(args.text_len), 32064, 224)
    ours = run_engine(args, prompts)
    hf = run_hf(args, prompts)
    result = {"config": "llava-vitb16-0.5b", "dtype": args.dtype, "requests": args.num_requests,
              "output_len": args.output_len, "vllm_core": ours, "transformers": hf,
              "ratio": ours["output_tok_s"] / hf["output_tok_s"]}
    print(f"{'':<12}{'output tok/s':>14}{'wall s':>10}")
    print(f"{'vllm-core':<12}{ours['output_tok_s']:>14.1f}{ours['wall_s']:>10.2f}   "
          f"({args.num_requests} requests at once; encoder {ours['encoder_share']:.1%} of the time)")
    print(f"{'transformers':<12}{hf['output_tok_s']:>14.1f}{hf['wall_s']:>10.2f}   ({hf['requests']} requests, batch 1)")
    print(f"ratio vllm-core / transformers: {result['ratio']:.2f}x; vllm-core image / text-only (image as "
          f"196 tokens): {ours['output_tok_s'] / ours['text_only_output_tok_s']:.2f}")
    print(json.dumps(result))
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "mm_cpu.json"), "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
