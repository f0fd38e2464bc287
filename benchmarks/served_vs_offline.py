"""Served vs offline on the same workload, in one command: what the server costs.

Runs ``vllm-core bench throughput`` (offline ``LLM.generate``) and then ``vllm-core serve`` +
``vllm-core bench serve`` (streamed ``/v1/completions`` at request rate inf) with the same
model, prompt/output lengths and number of requests, on the same machine, one after the other;
prints both throughputs, their ratio (the issue's goal: served >= 0.9 x offline) and the served
run's TTFT / TPOT / ITL, and writes everything to ``--out`` as JSON.

    # the GPU workload of issue 20: Qwen3-0.6B architecture, dummy weights, 256 x (512 in, 512 out)
    python benchmarks/served_vs_offline.py --model benchmarks/configs/qwen3-0.6b --load-format dummy \\
        --num-prompts 256 --input-len 512 --output-len 512 --max-model-len 2048 --out served_vs_offline.json

    # cpu platform smoke size
    python benchmarks/served_vs_offline.py --model benchmarks/configs/tiny-llama --load-format dummy \\
        --num-prompts 64 --input-len 64 --output-len 64 --max-model-len 256

Extra engine flags after ``--`` go to both runs (``-- --max-num-seqs 256 --device cpu``).
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
                    "--save-result", str(out), *engine], check=True)
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def served(args: argparse.Namespace, engine: list[str], out: Path) -> dict[str, Any]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([*CLI, "serve", args.model, "--port", str(port), "--served-model-name", "bench",
                               "--max-pending-requests", str(max(args.num_prompts * 2, 64)), *engine])
    try:
        _wait_healthy(url, server, args.start_timeout)
        # A short warm-up (graph capture, first compiles), then the measured run.
        subprocess.run([*CLI, "bench", "serve", "--base-url", url, "--num-prompts", "8", "--random-input-len",
                        str(args.input_len), "--random-output-len", "16", "--random-vocab-size",
                        str(_vocab_size(args.model))], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([*CLI, "bench", "serve", "--base-url", url, "--num-prompts", str(args.num_prompts),
                        "--random-input-len", str(args.input_len), "--random-output-len", str(args.output_len),
                        "--random-vocab-size", str(_vocab_size(args.model)), "--request-rate", "inf",
                        "--save-result", str(out)], check=True)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--load-format", default=None)
    parser.add_argument("--num-prompts", type=int, default=256)
    parser.add_argument("--input-len", type=int, default=512)
    parser.add_argument("--output-len", type=int, default=512)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--start-timeout", type=float, default=900)
    parser.add_argument("--out", default=None, help="Write both results and the ratio here (JSON).")
    args, extra = parser.parse_known_args()
    engine = [a for a in extra if a != "--"]
    if args.load_format:
        engine += ["--load-format", args.load_format]
    if args.max_model_len:
        engine += ["--max-model-len", str(args.max_model_len)]
    with tempfile.TemporaryDirectory() as tmp:
        off = offline(args, engine, Path(tmp) / "offline.json")
        srv = served(args, engine, Path(tmp) / "served.json")
    off_tok = float(off["output_tokens_per_second"])
    srv_tok = float(srv["output_throughput"])
    rows = [
        ("workload", f"{args.num_prompts} requests x ({args.input_len} in, {args.output_len} out), {args.model}"),
        ("offline output tok/s", f"{off_tok:,.1f}"),
        ("served output tok/s", f"{srv_tok:,.1f}"),
        ("served / offline", f"{srv_tok / off_tok:.3f}" if off_tok else "n/a"),
        ("served failed requests", srv["failed"]),
        ("served mean / p99 TTFT (ms)", f"{srv['mean_ttft_ms']:.1f} / {srv['p99_ttft_ms']:.1f}"),
        ("served mean / p99 TPOT (ms)", f"{srv['mean_tpot_ms']:.2f} / {srv['p99_tpot_ms']:.2f}"),
        ("served mean / p99 ITL (ms)", f"{srv['mean_itl_ms']:.2f} / {srv['p99_itl_ms']:.2f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print("\n=== served vs offline ===")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if args.out:
        Path(args.out).write_text(json.dumps({"offline": off, "served": srv, "ratio": srv_tok / off_tok if off_tok
                                              else None, "device": os.environ.get("CUDA_VISIBLE_DEVICES")}, indent=2))


if __name__ == "__main__":
    main()
