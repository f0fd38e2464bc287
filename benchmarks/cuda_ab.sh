#!/usr/bin/env bash
# A/B throughput on the device: the nano-vllm workload with the code in BASE (an older tree, e.g.
# `git archive <rev> core plugins/vllm-cuda | tar -x -C .base`) and with this checkout, alternated
# ROUNDS times so drift on the machine shows up as spread, not as a difference.
# Usage on the device (after the wheels are installed):  bash benchmarks/cuda_ab.sh .base 2
# NEW_ARGS="--max-num-batched-tokens 16384" adds engine options to the new tree's runs only.
set -uo pipefail
BASE=${1:?base tree}; ROUNDS=${2:-2}; OUT=${OUT:-/tmp/vllm_out}; NEW_ARGS=${NEW_ARGS:-}
run() {  # $1 label, $2 tree, then extra engine options
  python3 -m pip install -q --no-deps --no-build-isolation -e "$2/core" -e "$2/plugins/vllm-cuda" 2>&1 | grep -v WARNING
  timeout 300 vllm-core bench throughput --model benchmarks/configs/qwen3-0.6b --load-format dummy --dtype bfloat16 \
    --num-prompts 256 --input-len-range 100 1024 --output-len-range 100 1024 --temperature 0.6 --seed 0 \
    --max-model-len 4096 "${@:3}" --save-result "$OUT/throughput_$1.json" > "$OUT/throughput_$1.log" 2>&1
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], round(d['output_throughput'] if 'output_throughput' in d else d['output_tokens_per_second'], 1), 'output tok/s', round(d['elapsed_time'], 3), 's')" "$OUT/throughput_$1.json" "$1"
}
for i in $(seq 1 "$ROUNDS"); do
  run "base_$i" "$BASE"
  # shellcheck disable=SC2086
  run "new_$i" . $NEW_ARGS
done
