#!/usr/bin/env bash
# Speculative decoding on the GPU in ONE device call (install as cuda_device_run.sh does, then
# benchmarks/spec_decode_gpu.py; about 10 engine starts of Llama-3.1-8B with dummy weights).
# Usage on the device:  bash benchmarks/spec_decode_gpu.sh [quick]
set -uo pipefail
OUT=${OUT:-/tmp/vllm_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-deps --no-build-isolation -e core -e plugins/vllm-cuda 2>&1 | grep -v WARNING
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
QUICK=()
[ "${1:-}" = quick ] && QUICK=(--quick --iters 2)
timeout 580 python3 benchmarks/spec_decode_gpu.py --model benchmarks/configs/llama-3.1-8b "${QUICK[@]}" \
  --save-result "$OUT/spec_decode_gpu.json" 2>&1 | tail -80
