#!/usr/bin/env bash
# Images on the GPU in ONE device call: install as cuda_device_run.sh does (plus vllm-multimodal),
# the multimodal tests on cuda, then benchmarks/mm_gpu.py (LLaVA-1.5-7B architecture, dummy weights).
# Usage on the device:  bash benchmarks/mm_gpu.sh [quick]      (quick: under 4 min)
set -uo pipefail
OUT=${OUT:-/tmp/vllm_out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-deps --no-build-isolation -e core -e plugins/vllm-cuda -e plugins/vllm-multimodal 2>&1 | grep -v WARNING
python3 -c "import PIL" || { echo "Pillow is missing on the device: put its wheel in .whl/"; exit 1; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
QUICK=()
[ "${1:-}" = quick ] && QUICK=(--quick)
if [ "${1:-}" != quick ]; then
  echo "=== multimodal oracle tests on cuda"
  VLLM_CORE_TEST_DEVICES=cuda timeout 200 python3 -m pytest tests/plugins/multimodal -q -x -p no:cacheprovider 2>&1 | tail -15 | tee "$OUT/mm_tests.log"
fi
echo "=== LLaVA-1.5-7B (dummy) image + text vs text-only"
timeout 400 python3 benchmarks/mm_gpu.py "${QUICK[@]}" --save-result "$OUT/mm_gpu.json" 2>&1 | tail -20
