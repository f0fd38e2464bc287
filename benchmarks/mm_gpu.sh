#!/usr/bin/env bash
# Images on the GPU in ONE device call: install as cuda_device_run.sh does (plus vllm-multimodal),
# the multimodal tests on cuda, then benchmarks/mm_gpu.py (LLaVA-1.5-7B architecture, dummy weights).
# Usage on the device:  bash benchmarks/mm_gpu.sh [quick]      (quick: under 4 min)
set -uo pipefail
source benchmarks/device_env.sh core plugins/vllm-cuda plugins/vllm-multimodal
python3 -c "import PIL" || { echo "Pillow is missing on the device: put its wheel in .whl/"; exit 1; }
QUICK=()
[ "${1:-}" = quick ] && QUICK=(--quick)
if [ "${1:-}" != quick ]; then
  echo "=== multimodal oracle tests on cuda"
  VLLM_CORE_TEST_DEVICES=cuda timeout 200 python3 -m pytest tests/plugins/multimodal -q -x -p no:cacheprovider 2>&1 | tail -15 | tee "$OUT/mm_tests.log"
fi
echo "=== LLaVA-1.5-7B (dummy) image + text vs text-only"
timeout 400 python3 benchmarks/mm_gpu.py "${QUICK[@]}" --save-result "$OUT/mm_gpu.json" 2>&1 | tail -20
