#!/usr/bin/env bash
# LoRA on one GPU in under 5 minutes (H100/H200), for the lead's device call:
#   1. the short LoRA GPU tests: op tests + conformance kit on cuda (the Triton kernels on the
#      device against the float64 definition), the PEFT oracle through the engine on cuda (CUDA
#      graphs, Triton kernels, the embedding LoRA: the qwen3 mixed batch and the Triton engine
#      test), ~1.5 min;
#   2. the op micro-benchmark: GPU us per call of round 1's kernels vs the current ones vs the
#      PyTorch fallback, per Qwen3-0.6B projection, 1..2048 tokens, and the current op's launch
#      settings (block_m, block_n, waves) per layer at 1, 64, 256 tokens (--sweep), ~1 min;
#   3. throughput, nano-vllm shape (256 requests, 100-1024 in/out, Qwen3-0.6B, dummy weights,
#      bfloat16): base vs 4 adapters vs 16 adapters (max_loras 8), rank 16 on all seven
#      projections, in one run, printing each ratio to base (goals 0.85 and 0.75), ~2.5 min.
# Usage on the device:  bash benchmarks/lora_gpu_quick.sh      (JSON and logs in $OUT)
set -uo pipefail
source benchmarks/device_env.sh core plugins/vllm-cuda plugins/vllm-lora

echo; echo "=== LoRA tests on the GPU (ops, conformance, PEFT oracle on cuda)"
VLLM_CORE_TEST_DEVICES=cuda timeout 90 python3 -m pytest -q -x -p no:cacheprovider \
  tests/plugins/lora/test_lora_ops.py tests/plugins/lora/test_lora_conformance.py 2>&1 | tail -5 | tee "$OUT/lora_tests.log"
VLLM_CORE_TEST_DEVICES=cuda timeout 120 python3 -m pytest -q -x -p no:cacheprovider \
  tests/plugins/lora/test_lora_oracle.py -k "(mixed and qwen3 and cuda) or triton" 2>&1 | tail -5 | tee -a "$OUT/lora_tests.log"

echo; echo "=== LoRA op micro-benchmark (GPU us per call, CUDA graphs)"
timeout 150 python3 benchmarks/lora_kernel_bench.py --tokens 1 16 64 256 2048 --sweep --sweep-tokens 1 64 256 \
  --out "$OUT/lora_kernels.json" 2>&1 \
  | tee "$OUT/lora_kernels.log" | tail -45

echo; echo "=== Qwen3-0.6B nano-vllm shape: base vs lora4 vs lora16 (max_loras 8)"
timeout 330 python3 benchmarks/lora_bench.py --model benchmarks/configs/qwen3-0.6b --load-format dummy \
  --num-prompts "${NUM_PROMPTS:-256}" --min-input 100 --max-input 1024 --min-output 100 --max-output 1024 \
  --dtype bfloat16 --cases base lora4 lora16 --out "$OUT/lora_qwen3_0.6b.json" 2>&1 | tail -6
