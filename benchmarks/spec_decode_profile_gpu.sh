#!/usr/bin/env bash
# The forced-miss verification step vs a plain decode step on ONE H100/H200, in < 3 minutes:
# (1) benchmarks/spec_decode_profile_gpu.py: TPOT, host phases per step and a torch.profiler
#     breakdown (wall vs GPU busy per step, top ops by CPU / CUDA time) of plain and miss_k4_raw;
# (2) if time is left, the existing benchmark's numbers for the same pair
#     (spec_decode_gpu.py --only miss_k4_raw) as a cross-check.
# Llama-3.1-8B architecture, dummy weights, batch 1. Everything lands in $OUT.
# Usage on the device:  bash benchmarks/spec_decode_profile_gpu.sh
set -uo pipefail
source benchmarks/device_env.sh core plugins/vllm-cuda
timeout 140 python3 benchmarks/spec_decode_profile_gpu.py --model benchmarks/configs/llama-3.1-8b --out "$OUT" \
  2>&1 | tail -40 | tee "$OUT/profile_stdout.txt"
left=$((175 - SECONDS))
echo "seconds used: $SECONDS; left for the cross-check: $left"
if [ "$left" -gt 60 ]; then
  timeout "$left" python3 benchmarks/spec_decode_gpu.py --model benchmarks/configs/llama-3.1-8b --only miss_k4_raw \
    --iters 2 --output-len 64 --save-result "$OUT/spec_decode_gpu_miss.json" 2>&1 | tail -25
fi
