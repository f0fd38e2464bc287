# Sourced by every GPU script (never run alone): installs the wheels the device image lacks
# (.whl/, carried by the device tool) into /tmp/site, installs the named directories of this tree
# editable, and writes the GPU's name to $OUT/device.txt.
# Usage, from the repository root:  source benchmarks/device_env.sh core plugins/vllm-cuda [...]
OUT=${OUT:-/tmp/vllm_out}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
_editable=()
for _dir in "$@"; do _editable+=(-e "$_dir"); done
python3 -m pip install -q --no-deps --no-build-isolation "${_editable[@]}" 2>&1 | grep -v WARNING
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
unset _editable _dir
