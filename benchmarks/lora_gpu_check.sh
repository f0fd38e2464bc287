#!/usr/bin/env bash
# LoRA throughput on one H100/H200 in under 3 minutes (for the lead's single device call):
# Qwen3-0.6B nano-vllm shape (dummy weights, bfloat16, 100-1024 in / out, rank 16 on all seven
# projections), base vs 4 adapters vs 16 adapters with max_loras=8, in ONE run so the ratios
# compare like with like (goals: lora4 >= 0.85, lora16 >= 0.75 of base). 128 requests by default
# (NUM_PROMPTS=256 for the full shape, ~2x the time). Also prints the scheduler's view of
# the same workload on the CPU (benchmarks/lora_sched_sim.py: steps vs the max_loras bound), so
# a lora16 ratio can be read against the step count it had to take.
# Usage on the device:  bash benchmarks/lora_gpu_check.sh     (JSON in $OUT)
set -uo pipefail
source benchmarks/device_env.sh core plugins/vllm-cuda plugins/vllm-lora
NUM=${NUM_PROMPTS:-128}

echo; echo "=== Qwen3-0.6B, $NUM requests: base vs lora4 vs lora16 (max_loras 8), one run"
timeout 170 python3 benchmarks/lora_bench.py --model benchmarks/configs/qwen3-0.6b --load-format dummy \
  --num-prompts "$NUM" --min-input 100 --max-input 1024 --min-output 100 --max-output 1024 \
  --dtype bfloat16 --cases base lora4 lora16 --out "$OUT/lora_check_qwen3_0.6b.json" 2>&1 | tail -6

echo; echo "=== the scheduler on the CPU, same shape scaled 1/8 (steps vs the max_loras bound)"
CUDA_VISIBLE_DEVICES= timeout 60 python3 benchmarks/lora_sched_sim.py --num-prompts "$NUM" \
  --out "$OUT/lora_sched_sim.json" 2>&1 | grep -E "max_loras=|host tables"
