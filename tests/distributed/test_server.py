"""The OpenAI server with ``tensor_parallel_size=2`` (the engine core's process spawns the two
workers): a completion equals the TP=1 engine's, and when a worker is killed the server answers
503 on ``/health`` and leaves no process behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.distributed.conftest import DEVICE
from tests.server.conftest import TINY_ENGINE, start_server
from vllm_core import LLM, SamplingParams

PROMPT = "Once upon a time, in a quiet village,"


def worker_pids(core_pid: int) -> list[int]:
    """The engine core's spawned children (multiprocessing's ``spawn_main``)."""
    pids = []
    for task in Path(f"/proc/{core_pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"spawn_main" in cmd:
                pids.append(int(pid))
    return pids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_tp2_server_equals_tp1_and_reports_worker_death(tiny_chat_model: str) -> None:
    llm = LLM(tiny_chat_model, device=DEVICE, use_tqdm_on_load=False, **TINY_ENGINE)
    want = llm.generate([PROMPT], SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True), use_tqdm=False)
    del llm
    srv = start_server(tiny_chat_model, {**TINY_ENGINE, "device": DEVICE, "tensor_parallel_size": 2})
    try:
        got = srv.client().completions.create(model="test-model", prompt=PROMPT, max_tokens=12, temperature=0.0,
                                              extra_body={"ignore_eos": True})
        assert got.choices[0].text == want[0].outputs[0].text
        core = srv.engine.client.proc
        workers = worker_pids(core.pid)
        assert len(workers) == 2, workers
        os.kill(workers[1], signal.SIGKILL)
        r = httpx.post(f"{srv.url}/v1/completions", json={"prompt": PROMPT, "max_tokens": 4}, timeout=60)
        assert r.status_code in (500, 503), r.text
        deadline = time.monotonic() + 10
        while httpx.get(f"{srv.url}/health", timeout=10).status_code != 503:
            assert time.monotonic() < deadline, "/health did not turn 503"
            time.sleep(0.2)
        core.join(10)
        for pid in workers:
            t_end = time.monotonic() + 10
            while alive(pid):
                assert time.monotonic() < t_end, f"worker {pid} outlived the engine"
                time.sleep(0.1)
    finally:
        srv.stop()


def test_tp2_server_serves_speculative_decoding_metrics(tiny_chat_model: str) -> None:
    """n-gram speculation with the runners in worker processes: the completion equals the TP=1
    engine's without speculation, and /metrics serves vLLM's spec-decode counters (the engine
    core counts them from the steps' outputs; it holds no runner to ask)."""
    prompt = "one two three four one two three four one two three four one two three"
    llm = LLM(tiny_chat_model, device=DEVICE, use_tqdm_on_load=False, **TINY_ENGINE)
    want = llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=24, ignore_eos=True), use_tqdm=False)
    del llm
    spec = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 1, "prompt_lookup_max": 3,
            "min_acceptance_rate": 0.0}
    srv = start_server(tiny_chat_model, {**TINY_ENGINE, "device": DEVICE, "tensor_parallel_size": 2,
                                         "speculative_config": spec})
    try:
        got = srv.client().completions.create(model="test-model", prompt=prompt, max_tokens=24, temperature=0.0,
                                              extra_body={"ignore_eos": True})
        assert got.choices[0].text == want[0].outputs[0].text
        r = httpx.get(f"{srv.url}/metrics", timeout=30)
        assert r.status_code == 200, r.text
        values = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in r.text.splitlines()
                  if line.startswith("vllm:spec_decode_num_") and "_per_pos" not in line}
        assert values.get("vllm:spec_decode_num_draft_tokens_total", 0) > 0, values
        assert values["vllm:spec_decode_num_drafts_total"] > 0
    finally:
        srv.stop()
