"""A structured-output request whose grammar is still compiling waits in the queue; it never
holds up the step or the requests behind it (issue 5: "a structured request must never stall
unstructured requests in the same batch")."""

from __future__ import annotations

import re
import threading
import time

import pytest

from tests.core.test_scheduler import make_request
from vllm_core.config import SchedulerConfig
from vllm_core.core.kv_cache_manager import KVCacheManager
from vllm_core.core.scheduler import Scheduler
from vllm_core.request import Request, RequestStatus
from vllm_core.sampling_params import SamplingParams, StructuredOutputsParams


def test_scheduler_skips_requests_that_are_not_ready_and_keeps_their_place() -> None:
    compiling = {"b"}
    sched = Scheduler(SchedulerConfig(max_num_seqs=8), KVCacheManager(64, 4, True), 256,
                      ready=lambda req: req.request_id not in compiling)
    for rid in "abc":
        sched.add_request(make_request(rid, [1, 2, 3, 4, 5]))
    first = sched.schedule()
    assert [sr.req_id for sr in first.scheduled] == ["a", "c"]
    assert [r.request_id for r in sched.waiting] == ["b"]
    assert sched.requests["b"].status is RequestStatus.WAITING
    compiling.clear()
    assert "b" in [sr.req_id for sr in sched.schedule().scheduled]
    assert not sched.waiting and sched.requests["b"].status is RequestStatus.RUNNING


def test_not_ready_requests_stay_in_arrival_order() -> None:
    compiling = {"a", "b"}
    sched = Scheduler(SchedulerConfig(max_num_seqs=8), KVCacheManager(64, 4, True), 256,
                      ready=lambda req: req.request_id not in compiling)
    for rid in "abcd":
        sched.add_request(make_request(rid, [7, 8]))
    assert [sr.req_id for sr in sched.schedule().scheduled] == ["c", "d"]
    assert [r.request_id for r in sched.waiting] == ["a", "b"]


# ------------------------------------------------------------------- through the real engine
@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    pytest.importorskip("xgrammar")
    from tests.server.models import save_tiny_chat_model
    from vllm_core import LLM

    path = save_tiny_chat_model(str(tmp_path_factory.mktemp("tiny-chat-structured")))
    return LLM(path, max_model_len=256, num_gpu_blocks_override=64, block_size=16, use_tqdm_on_load=False)


def run_until(engine, done, timeout: float = 60.0) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Step until ``done(finished outputs)``; steps with nothing ready to run return at once."""
    finished: dict[str, object] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for out in engine.step():
            if out.finished:
                finished[out.request_id] = out
        if done(finished):
            return finished
    raise AssertionError(f"not done after {timeout} s; finished: {sorted(finished)}")


def test_a_compiling_grammar_does_not_stall_the_other_rows(llm) -> None:  # type: ignore[no-untyped-def]
    """Hold the core's grammar compiler (its cache lock) so a new grammar cannot finish compiling:
    the unconstrained request runs to completion meanwhile and the constrained one gets no token.
    Once compilation may go on, the constrained request runs and obeys its regex. Before the fix
    the first step that sampled the constrained row waited for its grammar (here: until the
    safety timer released it), so the unconstrained request could not finish first."""
    engine = llm.llm_engine
    manager = engine.core.runner.extensions.get("structured_outputs")  # the runner extension (plugin API v1)
    warm = SamplingParams(max_tokens=4, structured_outputs=StructuredOutputsParams(regex="[ab]{4}"))
    llm.generate("warm up", warm, use_tqdm=False)  # builds the core's compiler (tokenizer info)
    lock = manager._compiler._lock
    released = threading.Event()

    def release() -> None:
        released.set()
        lock.release()

    lock.acquire()
    timer = threading.Timer(20.0, release)  # never hang, even when the step does wait
    timer.start()
    try:
        regex = "(cat|dog)-[0-9]{3}"
        engine.add_request("constrained", "Pick:", SamplingParams(
            max_tokens=12, structured_outputs=StructuredOutputsParams(regex=regex)))
        engine.add_request("free", "Hello", SamplingParams(max_tokens=12, ignore_eos=True, temperature=0))
        first = run_until(engine, lambda f: "free" in f)
        assert not released.is_set(), "the step waited for the constrained request's grammar"
        assert "constrained" not in first
        queued: list[Request] = list(engine.core.scheduler.waiting)
        assert [r.request_id for r in queued] == ["constrained"] and len(first["free"].outputs[0].token_ids) == 12
    finally:
        timer.cancel()
        if not released.is_set():
            release()
    rest = run_until(engine, lambda f: "constrained" in f)
    assert re.fullmatch(regex, rest["constrained"].outputs[0].text)
