#!/usr/bin/env bash
# Everything the CUDA issue measures, in ONE device call (see the device tool's README):
#   1. install (wheels the image lacks travel in .whl/), 2. kernel tests on the GPU,
#   3. conformance kit + end-to-end oracle on cuda, 4. copy bandwidth, 5. our throughput on
#   nano-vllm's workload (Qwen3-0.6B architecture, dummy weights), 6. transformers continuous
#   batching on the same workload shape, 7. batch-1 decode latency on Llama-3.1-8B.
# Usage on the device:  bash benchmarks/cuda_device_run.sh [quick]
set -uo pipefail
source benchmarks/device_env.sh core plugins/vllm-cuda

step() { echo; echo "=== $1"; }
step "kernel, conformance and end-to-end tests on the GPU"
timeout 420 python3 -m pytest tests/plugins/cuda -q -x -p no:cacheprovider 2>&1 | tail -25 | tee "$OUT/tests.log"

step "copy bandwidth"
python3 benchmarks/bandwidth.py | tee "$OUT/bandwidth.json"

NUM=${NUM_PROMPTS:-256}
[ "${1:-}" = quick ] && NUM=32
step "vllm-core bench throughput: nano-vllm workload ($NUM prompts)"
timeout 400 vllm-core bench throughput --model benchmarks/configs/qwen3-0.6b --load-format dummy --dtype bfloat16 \
  --num-prompts "$NUM" --input-len-range 100 1024 --output-len-range 100 1024 --temperature 0.6 --seed 0 \
  --max-model-len 4096 --save-result "$OUT/throughput_qwen3_0.6b.json" 2>&1 | tail -25

step "transformers generate_batch on the same shape (subset)"
timeout 200 python3 benchmarks/hf_baseline.py benchmarks/configs/qwen3-0.6b --num-prompts 16 --output-len 256 \
  --save-result "$OUT/hf_generate_batch.json" 2>&1 | tail -5

step "bench latency: Llama-3.1-8B, batch 1, 512-token prompt"
timeout 300 vllm-core bench latency --model benchmarks/configs/llama-3.1-8b --load-format dummy --dtype bfloat16 \
  --input-len 512 --output-len 128 --batch-size 1 --num-iters-warmup 1 --num-iters 3 --max-model-len 1024 \
  --save-result "$OUT/latency_llama3_8b.json" 2>&1 | tail -20
