"""A worker that dies or hangs ends the engine with a ``WorkerError`` naming the rank within the
bound, and leaves no worker process behind; a bad combination is refused before any starts."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from tests.distributed.conftest import DEVICE
from vllm_core import LLM, SamplingParams
from vllm_core.errors import ConfigError, ModelLoadError, WorkerError

PARAMS = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True, detokenize=False)
PROMPTS = [{"prompt_token_ids": [5, 6, 7, 8]}, {"prompt_token_ids": [9, 10, 11]}]


def start(path: str, tp: int = 2, **kwargs) -> LLM:  # type: ignore[no-untyped-def]
    return LLM(path, dtype="float32", device=DEVICE, skip_tokenizer_init=True, use_tqdm_on_load=False,
               max_model_len=64, num_gpu_blocks_override=16, block_size=8, tensor_parallel_size=tp,
               distributed_executor_backend="mp", **kwargs)


def assert_no_worker_left(procs: list) -> None:  # type: ignore[type-arg]
    for p in procs:
        p.join(5)
        assert not p.is_alive(), f"worker pid {p.pid} survived"
        with pytest.raises(ProcessLookupError):
            os.kill(p.pid, 0)
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("vllm-core-worker")]


@pytest.mark.parametrize("fault", ["kill", "hang"])
def test_worker_fault_ends_engine(tiny_models, fault: str) -> None:  # type: ignore[no-untyped-def]
    """kill: SIGKILL rank 1 between steps (noticed at once); hang: SIGSTOP rank 1, so rank 0
    waits in its all-reduce and nothing answers: the engine gives up after distributed_timeout_s."""
    path, _ = tiny_models["llama"]
    llm = start(path, distributed_timeout_s=4.0)
    executor = llm.llm_engine.core.executor
    procs = list(executor.procs)
    assert len(llm.generate(PROMPTS, PARAMS, use_tqdm=False)) == 2  # healthy first
    os.kill(procs[1].pid, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match="rank 1" if fault == "kill" else "did not answer within") as err:
        llm.generate(PROMPTS, PARAMS, use_tqdm=False)
    took = time.monotonic() - t0
    assert took < (3.0 if fault == "kill" else 4.0 + 6.0), f"noticed after {took:.1f} s: {err.value}"
    assert_no_worker_left(procs)
    with pytest.raises(WorkerError):  # and it stays failed
        llm.generate(PROMPTS, PARAMS, use_tqdm=False)


def test_bad_combinations_refused_before_start(tiny_models) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_models["llama"]
    with pytest.raises(ConfigError, match="'uni' runs one process"):
        LLM(path, tensor_parallel_size=2, distributed_executor_backend="uni")
    with pytest.raises(ModelLoadError, match="num_attention_heads \\(4\\) is not divisible by tensor_parallel_size=3"):
        start(path, tp=3)
    with pytest.raises(ModelLoadError, match="pipeline_parallel_size=3 is larger than the model's 2 layers"):
        start(path, tp=1, pipeline_parallel_size=3)
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("vllm-core-worker")]


DRIVER = """
import sys
from vllm_core import LLM
llm = LLM(sys.argv[1], dtype="float32", device=sys.argv[2], skip_tokenizer_init=True, use_tqdm_on_load=False,
          max_model_len=64, num_gpu_blocks_override=16, block_size=8, tensor_parallel_size=2,
          distributed_executor_backend="mp")
print(" ".join(str(p.pid) for p in llm.llm_engine.core.executor.procs), flush=True)
sys.stdin.read()
"""


def test_workers_exit_when_the_driver_is_killed(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL of the engine's process (no clean-up runs): its workers notice and exit."""
    import subprocess
    import sys

    path, _ = tiny_models["llama"]
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, path, DEVICE], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in driver.stdout.readline().split()]  # type: ignore[union-attr]
        assert len(pids) == 2
        driver.kill()
        driver.wait(10)
        deadline = time.monotonic() + 10
        while any(_running(p) for p in pids):
            assert time.monotonic() < deadline, f"workers {pids} outlived their driver"
            time.sleep(0.1)
    finally:
        driver.kill()


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
