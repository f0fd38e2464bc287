#!/usr/bin/env bash
# The LoRA issue's GPU measurements in ONE device call (for the lead):
#   1. install core + vllm-cuda + vllm-lora (+ peft for the oracle; wheels the image lacks in .whl/),
#   2. the LoRA tests on the GPU (Triton kernels on the device, PEFT oracle on cuda with CUDA graphs),
#   3. throughput with LoRA vs without in the same run (nano-vllm shape, dummy weights):
#      Qwen3-0.6B 4 adapters (target >= 0.85), 16 adapters with max_loras=8 (>= 0.75);
#      Llama-3.1-8B the same; batch-1 8B TPOT with one adapter (<= 1.15x).
# Usage on the device:  bash benchmarks/lora_device_run.sh [quick]
set -uo pipefail
source benchmarks/device_env.sh core plugins/vllm-cuda plugins/vllm-lora

step() { echo; echo "=== $1"; }
step "LoRA tests on the GPU (kernels on the device, oracle on cuda)"
VLLM_CORE_TEST_DEVICES=cuda timeout 300 python3 -m pytest tests/plugins/lora -q -x -p no:cacheprovider \
  --deselect tests/plugins/lora/test_lora_server.py 2>&1 | tail -15 | tee "$OUT/lora_tests.log"

NUM=${NUM_PROMPTS:-256}
[ "${1:-}" = quick ] && NUM=32
SHAPE="--num-prompts $NUM --min-input 100 --max-input 1024 --min-output 100 --max-output 1024 --dtype bfloat16"
step "Qwen3-0.6B: base vs 4 adapters vs 16 adapters (max_loras 8), rank 16 on all seven projections"
timeout 500 python3 benchmarks/lora_bench.py --model benchmarks/configs/qwen3-0.6b --load-format dummy $SHAPE \
  --cases base lora4 lora16 --out "$OUT/lora_qwen3_0.6b.json" 2>&1 | tail -6
step "Llama-3.1-8B: base vs 4 adapters vs 16 adapters (max_loras 8)"
timeout 900 python3 benchmarks/lora_bench.py --model benchmarks/configs/llama-3.1-8b --load-format dummy $SHAPE \
  --cases base lora4 lora16 --out "$OUT/lora_llama3_8b.json" 2>&1 | tail -6
step "Llama-3.1-8B batch 1: TPOT with one adapter vs none"
timeout 400 python3 benchmarks/lora_bench.py --model benchmarks/configs/llama-3.1-8b --load-format dummy \
  --num-prompts 1 --min-input 128 --max-input 128 --min-output 256 --max-output 256 --dtype bfloat16 \
  --cases base lora1 --out "$OUT/lora_llama3_8b_b1.json" 2>&1 | tail -4
