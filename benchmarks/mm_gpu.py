"""Image + text throughput on one GPU: LLaVA-1.5-7B architecture with dummy weights (bf16).

256 requests, each one random 336x336 image (576 image tokens) + 100-512 random text tokens in,
128-512 tokens out (uniform per request, seeded), greedy with ``ignore_eos``. Then the same run's
text-only baseline on the same engine: each image replaced by 576 random text tokens (the image
counted as prompt), same text and output lengths. The issue asks image/text >= 0.8.

    python benchmarks/mm_gpu.py [--quick] [--num-requests 256] [--save-result f.json]

Prints output tok/s of both runs, their ratio, the encoder's share of the image run's wall time
and the front end's image preprocessing time; JSON with --save-result (or $OUT/mm_gpu.json).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mm_common import encoder_stats, image_prompts, random_image, text_twins, time_encoder  # noqa: E402

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "llava-1.5-7b")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 requests, 128-256 out (under 4 min with start-up)")
    parser.add_argument("--num-requests", type=int, default=256)
    parser.add_argument("--text-len", type=int, nargs=2, default=(100, 512))
    parser.add_argument("--output-len", type=int, nargs=2, default=(128, 512))
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--save-result", default=None)
    parser.add_argument("--model", default=CONFIG, help="a LLaVA config directory (dummy weights)")
    args = parser.parse_args()
    if args.quick:
        args.num_requests, args.output_len = 64, (128, 256)

    from vllm_core import LLM, SamplingParams

    from transformers import AutoConfig

    vision = AutoConfig.from_pretrained(args.model).vision_config
    size, image_tokens = vision.image_size, (vision.image_size // vision.patch_size) ** 2
    llm = LLM(args.model, load_format="dummy", dtype="bfloat16", max_model_len=2048, max_num_seqs=args.max_num_seqs,
              limit_mm_per_prompt={"image": 1}, use_tqdm_on_load=False)
    platform = llm.llm_engine.platform
    rng = random.Random(0)
    out_lens = [rng.randint(*args.output_len) for _ in range(args.num_requests)]
    params = [SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True, detokenize=False) for n in out_lens]
    t0 = time.perf_counter()
    prompts = image_prompts(args.num_requests, tuple(args.text_len), 32064, size, seed=1)
    images_s = time.perf_counter() - t0
    twins = text_twins(prompts, image_tokens, 32064)
    warm = [{"prompt_token_ids": [1, 32000, 5, 6], "multi_modal_data": {"image": random_image(size, 7)}}]
    llm.generate(warm, SamplingParams(max_tokens=4, detokenize=False), use_tqdm=False)  # warm-up (graphs, encoder)

    def timed(batch: list[dict]) -> tuple[float, int]:
        platform.synchronize()
        start = time.perf_counter()
        outs = llm.generate(batch, params, use_tqdm=False)
        platform.synchronize()
        return time.perf_counter() - start, sum(len(o.outputs[0].token_ids) for o in outs)

    runs0, _ = encoder_stats(llm)
    img_wall, img_tokens = timed(prompts)  # the throughput run: encoder untimed (no syncs)
    runs, _ = encoder_stats(llm)
    txt_wall, txt_tokens = timed(twins)
    # the encoder's share: the same images again (fresh copies: not cached), each encoder batch
    # waited for and timed, over the untimed run's wall time
    n_share = min(len(prompts), 64)
    again = image_prompts(n_share, tuple(args.text_len), 32064, size, seed=2)
    time_encoder(llm, True)
    _, enc0 = encoder_stats(llm)
    llm.generate(again, SamplingParams(max_tokens=1, detokenize=False), use_tqdm=False)
    _, enc1 = encoder_stats(llm)
    time_encoder(llm, False)
    enc = (enc1 - enc0) * (runs - runs0) / n_share
    # the front end's share: processing the images alone (HF image processor, expansion, hashes)
    proc = llm.llm_engine.input_processor.multimodal
    t0 = time.perf_counter()
    for p in prompts[:32]:
        proc.apply(p["prompt_token_ids"], p["multi_modal_data"])
    preprocess_per_image = (time.perf_counter() - t0) / min(32, len(prompts))

    result = {
        "config": f"{os.path.basename(args.model)} (dummy, bf16)", "requests": args.num_requests, "text_len": args.text_len,
        "output_len": args.output_len, "device": platform.name,
        "image": {"output_tok_s": img_tokens / img_wall, "wall_s": img_wall, "encoder_runs": runs - runs0,
                  "encoder_s": enc, "encoder_share": enc / img_wall,
                  "preprocess_ms_per_image": preprocess_per_image * 1e3},
        "text_only": {"output_tok_s": txt_tokens / txt_wall, "wall_s": txt_wall},
        "drawing_images_s": images_s,
    }
    result["ratio_image_vs_text"] = result["image"]["output_tok_s"] / result["text_only"]["output_tok_s"]
    print(f"{'run':<34}{'output tok/s':>14}{'wall s':>10}")
    print(f"{f'image + text ({image_tokens} image tokens)':<34}{result['image']['output_tok_s']:>14.1f}{img_wall:>10.2f}")
    print(f"{f'text only (image as {image_tokens} tokens)':<34}{result['text_only']['output_tok_s']:>14.1f}{txt_wall:>10.2f}")
    print(f"ratio image / text-only: {result['ratio_image_vs_text']:.3f} (issue: >= 0.8)")
    print(f"encoder: {runs - runs0} images, {enc:.2f} s (timed on {n_share} more) = "
          f"{result['image']['encoder_share']:.1%} of the image run; "
          f"front-end preprocessing {preprocess_per_image * 1e3:.1f} ms per image")
    print(json.dumps(result))
    path = args.save_result or (os.path.join(os.environ["OUT"], "mm_gpu.json") if os.environ.get("OUT") else None)
    if path:
        with open(path, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
