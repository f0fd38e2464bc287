"""Served vs offline on the same workload, in one command: what the server costs.

Runs ``vllm-core bench throughput`` (offline ``LLM.generate``) and then ``vllm-core serve`` +
``vllm-core bench serve`` (streamed ``/v1/completions`` at request rate inf) with the same
model, prompt/output lengths and number of requests, on the same machine, one after the other;
prints both throughputs, their ratio (the issue's goal: served >= 0.9 x offline) and the served
run's TTFT / TPOT / ITL, and writes everything to ``--out`` as JSON.

    # the GPU workload of issue 20: Qwen3-0.6B architecture, dummy weights, 256 x (512 in, 512 out)
    python benchmarks/served_vs_offline.py --model benchmarks/configs/qwen3-0.6b --load-format dummy \\
        --num-prompts 256 --input-len 512 --output-len 512 --max-model-len 2048 --out served_vs_offline.json

    # the same, preset, one device call of about 2-3 minutes on an H100 (what the lead runs)
    python benchmarks/served_vs_offline.py --quick

    # cpu proxy: a tiny random llama, 256 concurrent streams, so per-token Python costs dominate as
    # on a GPU; --rounds alternates offline and served runs
    python benchmarks/served_vs_offline.py --tiny --rounds 2

Extra engine flags after ``--`` go to both runs (``-- --max-num-seqs 256 --device cpu``).

Besides the throughputs, the served run reports the CPU time of the API process, the engine-core
process and the benchmark client per output token (from ``/proc``, so other load on the machine
does not change it): whichever process needs more than the core's wall time per token is the
bottleneck. ``--profile DIR`` records the API process with py-spy (when installed) during the
measured run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "vllm_core.entrypoints.cli.main"]
HERE = Path(__file__).resolve().parent

PRESETS: dict[str, dict[str, Any]] = {
    # issue 20's GPU workload
    "quick": {"model": str(HERE / "configs" / "qwen3-0.6b"), "load_format": "dummy", "num_prompts": 256,
              "input_len": 512, "output_len": 512, "max_model_len": 2048, "engine": []},
    # the cpu proxy: tiny model, many streams, per-token overheads dominate
    "tiny": {"model": str(HERE / "configs" / "tiny-llama"), "load_format": "dummy", "num_prompts": 256,
             "input_len": 64, "output_len": 128, "max_model_len": 256,
             "engine": ["--device", "cpu", "--max-num-seqs", "256"]},
}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (``/proc``; 0 where unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _vocab_size(model: str) -> int:
    config = Path(model) / "config.json"
    if config.exists():
        return int(json.loads(config.read_text()).get("vocab_size", 1000))
    return 1000


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise SystemExit(f"the server did not become healthy within {timeout:.0f}s")


def offline(args: argparse.Namespace, engine: list[str], out: Path) -> dict[str, Any]:
    subprocess.run([*CLI, "bench", "throughput", "--model", args.model, "--num-prompts", str(args.num_prompts),
                    "--input-len", str(args.input_len), "--output-len", str(args.output_len),
                    "--save-result", str(out), *engine], check=True, env=_engine_env(args))
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def _engine_env(args: argparse.Namespace) -> dict[str, str]:
    """The engine's environment: ``--engine-src`` first on the path (an A/B against another tree's
    ``core/src``; the benchmark client stays this tree's)."""
    env = dict(os.environ)
    if args.engine_src:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (args.engine_src, env.get("PYTHONPATH")) if p)
    return env


def _run_measured(cmd: list[str]) -> float:
    """Run ``cmd`` to the end; its CPU seconds (user + system, children included)."""
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return float(usage.ru_utime + usage.ru_stime)


def served(args: argparse.Namespace, engine: list[str], out: Path) -> dict[str, Any]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([*CLI, "serve", args.model, "--port", str(port), "--served-model-name", "bench",
                               "--max-pending-requests", str(max(args.num_prompts * 2, 64)),
                               *engine], env=_engine_env(args))
    cpu: dict[str, float] = {}
    try:
        _wait_healthy(url, server, args.start_timeout)
        # A short warm-up (graph capture, first compiles), then the measured run.
        subprocess.run([*CLI, "bench", "serve", "--base-url", url, "--num-prompts", "8", "--random-input-len",
                        str(args.input_len), "--random-output-len", "16", "--random-vocab-size",
                        str(_vocab_size(args.model))], check=True, stdout=subprocess.DEVNULL)
        frontends = [server.pid]
        cores = _descendants(server.pid)
        before = {p: _cpu_seconds(p) for p in frontends + cores}
        profiler = _start_profile(args.profile, server.pid)
        client = _run_measured([*CLI, "bench", "serve", "--base-url", url, "--num-prompts", str(args.num_prompts),
                                "--random-input-len", str(args.input_len), "--random-output-len",
                                str(args.output_len), "--random-vocab-size", str(_vocab_size(args.model)),
                                "--request-rate", "inf", "--save-result", str(out)])
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(60)
        cpu = {"api_s": sum(_cpu_seconds(p) - before[p] for p in frontends),
               "core_s": sum(_cpu_seconds(p) - before[p] for p in cores), "client_process_s": client}
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
    result: dict[str, Any] = json.loads(out.read_text())
    # the client's CPU in the run itself (its imports left out) when it reports it
    cpu["client_s"] = float(result.get("client_cpu_time", cpu.get("client_process_s", 0.0)))
    result["cpu_seconds"] = cpu
    return result


def _descendants(pid: int) -> list[int]:
    """The engine-core process and whatever it started (workers)."""
    out = []
    for child in _children(pid):
        out += [child, *_descendants(child)]
    return out


def _start_profile(directory: str | None, pid: int) -> subprocess.Popen[bytes] | None:
    if not directory:
        return None
    import shutil

    exe = shutil.which("py-spy")
    if exe is None:
        print("--profile: py-spy is not installed (pip install py-spy); not profiling", file=sys.stderr)
        return None
    Path(directory).mkdir(parents=True, exist_ok=True)
    target = Path(directory) / f"api-{int(time.time())}.txt"
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--format", "raw", "--rate", "200",
                             "--nonblocking", "-o", str(target)], stdout=subprocess.DEVNULL)


def _per_token_us(seconds: float, tokens: int) -> str:
    return f"{seconds / tokens * 1e6:.1f}" if tokens else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Issue 20's GPU workload, preset (Qwen3-0.6B "
                        "architecture, dummy weights, 256 x 512/512).")
    parser.add_argument("--tiny", action="store_true", help="The cpu proxy, preset (tiny random llama on the cpu "
                        "platform, 256 x 64/128).")
    parser.add_argument("--model", default=None)
    parser.add_argument("--load-format", default=None)
    parser.add_argument("--num-prompts", type=int, default=None)
    parser.add_argument("--input-len", type=int, default=None)
    parser.add_argument("--output-len", type=int, default=None)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=1, help="Offline and served runs alternated this many times.")
    parser.add_argument("--start-timeout", type=float, default=900)
    parser.add_argument("--engine-src", default=None, help="Run the engine (offline and server) from this "
                        "core/src instead (e.g. a `git archive` of the base commit), for an A/B.")
    parser.add_argument("--profile", default=None, help="Record the API process with py-spy into this folder.")
    parser.add_argument("--out", default=None, help="Write both results and the ratio here (JSON; default "
                        "$OUT/served_vs_offline.json when $OUT is set).")
    args, extra = parser.parse_known_args()
    engine = [a for a in extra if a != "--"]
    if args.quick and args.tiny:
        parser.error("give one of --quick and --tiny")
    preset = PRESETS["quick" if args.quick else "tiny"] if args.quick or args.tiny else {}
    for key in ("model", "load_format", "num_prompts", "input_len", "output_len", "max_model_len"):
        if getattr(args, key) is None:
            setattr(args, key, preset.get(key, {"num_prompts": 256, "input_len": 512, "output_len": 512}.get(key)))
    if args.model is None:
        parser.error("give --model (or --quick / --tiny)")
    engine = [*preset.get("engine", []), *engine]
    if args.load_format:
        engine += ["--load-format", args.load_format]
    if args.max_model_len:
        engine += ["--max-model-len", str(args.max_model_len)]
    runs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            off = offline(args, engine, Path(tmp) / f"offline{r}.json")
            srv = served(args, engine, Path(tmp) / f"served{r}.json")
            runs.append((off, srv))
    ratios = []
    print("\n=== served vs offline ===")
    print(f"workload: {args.num_prompts} requests x ({args.input_len} in, {args.output_len} out), {args.model} "
          f"{' '.join(engine)}")
    for r, (off, srv) in enumerate(runs):
        off_tok = float(off["output_tokens_per_second"])
        srv_tok = float(srv["output_throughput"])
        ratios.append(srv_tok / off_tok if off_tok else 0.0)
        tokens = int(srv["total_output_tokens"])
        cpu = srv["cpu_seconds"]
        rows = [
            ("offline output tok/s", f"{off_tok:,.1f}"),
            ("served output tok/s", f"{srv_tok:,.1f}"),
            ("served / offline", f"{ratios[-1]:.3f}"),
            ("served failed requests", srv["failed"]),
            ("served mean / p99 TTFT (ms)", f"{srv['mean_ttft_ms']:.1f} / {srv['p99_ttft_ms']:.1f}"),
            ("served mean / p99 TPOT (ms)", f"{srv['mean_tpot_ms']:.2f} / {srv['p99_tpot_ms']:.2f}"),
            ("served mean / p99 ITL (ms)", f"{srv['mean_itl_ms']:.2f} / {srv['p99_itl_ms']:.2f}"),
            ("offline wall us / output token", _per_token_us(1.0, int(off_tok))),
            ("offline CPU us / output token", _per_token_us(float(off.get("cpu_time") or 0.0),
                                                            int(off["total_output_tokens"]))),
            ("served wall us / output token", _per_token_us(float(srv["duration"]), tokens)),
            ("CPU us / output token: API process", _per_token_us(cpu.get("api_s", 0.0), tokens)),
            ("CPU us / output token: engine core", _per_token_us(cpu.get("core_s", 0.0), tokens)),
            ("CPU us / output token: bench client", _per_token_us(cpu.get("client_s", 0.0), tokens)),
            ("streamed events with tokens", f"{srv.get('total_token_events', 0):,} "
                                            f"({tokens / max(int(srv.get('total_token_events') or 1), 1):.2f} tokens each)"),
            ("CPU us / event: API process", _per_token_us(cpu.get("api_s", 0.0), int(srv.get("total_token_events") or 0))),
        ]
        width = max(len(k) for k, _ in rows)
        print(f"--- round {r + 1}")
        for key, value in rows:
            print(f"{key:<{width}}  {value}")
    if len(ratios) > 1:
        print(f"served / offline per round: {', '.join(f'{x:.3f}' for x in ratios)}; "
              f"mean {sum(ratios) / len(ratios):.3f}")
    out = args.out or (os.path.join(os.environ["OUT"], "served_vs_offline.json") if os.environ.get("OUT") else None)
    if out:
        Path(out).write_text(json.dumps({"runs": [{"offline": o, "served": s, "ratio": x}
                                                  for (o, s), x in zip(runs, ratios)],
                                         "ratio": sum(ratios) / len(ratios), "engine": engine,
                                         "device": os.environ.get("CUDA_VISIBLE_DEVICES")}, indent=2))


if __name__ == "__main__":
    main()
