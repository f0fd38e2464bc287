#!/usr/bin/env bash
# After merging this round's branches: the GPU test suites of vllm-cuda and vllm-lora on the
# device and one nano-vllm throughput run, in ONE device call (about 9 minutes on an H100: the cuda suite took longer than 300 s this round).
# Usage on the device:  bash benchmarks/round_device_check.sh
set -uo pipefail
source benchmarks/device_env.sh core plugins/vllm-cuda plugins/vllm-lora
echo "=== vllm-cuda tests on the GPU"
timeout 420 python3 -m pytest tests/plugins/cuda -q -x -p no:cacheprovider 2>&1 | tail -15 | tee "$OUT/cuda_tests.log"
echo "=== vllm-lora tests on the GPU"
VLLM_CORE_TEST_DEVICES=cuda timeout 150 python3 -m pytest tests/plugins/lora -q -x -p no:cacheprovider \
  --deselect tests/plugins/lora/test_lora_server.py 2>&1 | tail -15 | tee "$OUT/lora_tests.log"
echo "=== nano-vllm workload (256 prompts)"
timeout 120 vllm-core bench throughput --model benchmarks/configs/qwen3-0.6b --load-format dummy --dtype bfloat16 \
  --num-prompts 256 --input-len-range 100 1024 --output-len-range 100 1024 --temperature 0.6 --seed 0 \
  --max-model-len 4096 --save-result "$OUT/throughput_qwen3_0.6b.json" 2>&1 | grep -E "Device|Output token"
