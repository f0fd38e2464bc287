#!/usr/bin/env bash
# This round's GPU numbers in ONE device call (< 10 min on one H100/H200), most important first:
#   1. LoRA throughput, nano-vllm shape (Qwen3-0.6B dummy): base vs 4 adapters vs 16 adapters  (issue 14)
#   2. images: LLaVA-1.5-7B architecture (dummy), image + text vs text-only, --quick         (issue 15)
#   3. served vs offline, Qwen3-0.6B dummy, --quick                                          (issue 20)
#   4. speculative decoding, 8B dummy: plain vs a self-draft (all accepted) and a forced miss at
#      batch 1, n-gram at 64 concurrent (SPEC_ONLY picks other cases, e.g. eagle_k4_raw) (issue 19)
# Each part has its own timeout; JSON and logs land in $OUT.
# Usage on the device:  bash benchmarks/round2_device.sh [parts...]   (default: 1 2 3 4)
set -uo pipefail
source benchmarks/device_env.sh core plugins/vllm-cuda plugins/vllm-lora plugins/vllm-multimodal
PARTS=("${@:-1 2 3 4}")
# shellcheck disable=SC2068
for part in ${PARTS[@]}; do
  case $part in
    1) echo "=== 1. LoRA: base vs lora4 vs lora16 (Qwen3-0.6B dummy, 256 prompts)"
       timeout 200 python3 benchmarks/lora_bench.py --model benchmarks/configs/qwen3-0.6b --load-format dummy \
         --num-prompts 256 --min-input 100 --max-input 1024 --min-output 100 --max-output 1024 \
         --dtype bfloat16 --cases base lora4 lora16 --out "$OUT/lora_qwen3_0.6b.json" 2>&1 | tail -6 ;;
    2) echo "=== 2. LLaVA-1.5-7B (dummy): image + text vs text-only (--quick)"
       timeout 240 python3 benchmarks/mm_gpu.py --quick --save-result "$OUT/mm_gpu.json" 2>&1 | tail -12 ;;
    3) echo "=== 3. served vs offline (--quick)"
       timeout 170 python3 benchmarks/served_vs_offline.py --quick --out "$OUT/served_vs_offline.json" 2>&1 | tail -14 ;;
    4) echo "=== 4. speculative decoding (quick)"
       timeout 260 python3 benchmarks/spec_decode_gpu.py --model benchmarks/configs/llama-3.1-8b --quick --iters 1 \
         --only "${SPEC_ONLY:-self_k4,miss_k4_raw,miss_k4_policy,ngram_c64}" --save-result "$OUT/spec_decode_gpu.json" 2>&1 | tail -20 ;;
    5) echo "=== 5. cuda tests touched this round (EAGLE, verify replay, multimodal on cuda)"
       VLLM_CORE_TEST_DEVICES=cuda timeout 200 python3 -m pytest -q -x -p no:cacheprovider \
         tests/plugins/cuda/test_device_e2e.py tests/plugins/multimodal -k "not server" 2>&1 | tail -8 ;;
  esac
done
