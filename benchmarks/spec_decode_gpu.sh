#!/usr/bin/env bash
# Speculative decoding on the GPU in ONE device call (install as cuda_device_run.sh does, then
# benchmarks/spec_decode_gpu.py; about 10 engine starts of Llama-3.1-8B with dummy weights).
# Usage on the device:  bash benchmarks/spec_decode_gpu.sh [quick]
set -uo pipefail
source benchmarks/device_env.sh core plugins/vllm-cuda
QUICK=()
[ "${1:-}" = quick ] && QUICK=(--quick --iters 2)
timeout 580 python3 benchmarks/spec_decode_gpu.py --model benchmarks/configs/llama-3.1-8b "${QUICK[@]}" \
  --save-result "$OUT/spec_decode_gpu.json" 2>&1 | tail -80
