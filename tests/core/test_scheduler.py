"""Tests for vllm_core.core.scheduler (and core.stop), driven without a model.

``PagedDriver`` plays the model runner: it writes every scheduled token into a simulated paged
KV cache (block id -> slots) through the request's block table, and "samples" a deterministic
function of the tokens it *reads back* from that cache. A wrong block table, a wrong start
position, a bad prefix hit or a lost block after preemption therefore changes the tokens.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from vllm_core.config import SchedulerConfig
from vllm_core.core.kv_cache_manager import KVCacheManager
from vllm_core.core.sched_output import ModelRunnerOutput, SchedulerOutput
from vllm_core.core.scheduler import DEFAULT_MAX_NUM_BATCHED_TOKENS, Scheduler
from vllm_core.request import Request, RequestStatus
from vllm_core.sampling_params import SamplingParams

BLOCK = 4
MAX_MODEL_LEN = 256

TokenFn = Callable[[str, list[int]], int]


def next_token(req_id: str, history: list[int]) -> int:
    """The fake model: a deterministic function of the whole token history."""
    return (sum(history) * 31 + len(history) * 7 + 7) % 1000


def reference_tokens(prompt: list[int], n: int, fn: TokenFn = next_token, req_id: str = "") -> list[int]:
    tokens = list(prompt)
    for _ in range(n):
        tokens.append(fn(req_id, tokens))
    return tokens[len(prompt) :]


def make_request(
    request_id: str,
    prompt: list[int],
    max_tokens: int = 8,
    eos_token_id: int | None = None,
    **params: object,
) -> Request:
    sp = SamplingParams(max_tokens=max_tokens, **params)  # type: ignore[arg-type]
    return Request(request_id, list(prompt), sp, eos_token_id, max_tokens)


def make_scheduler(
    num_blocks: int = 64,
    max_num_seqs: int = 256,
    max_num_batched_tokens: int | None = 64,
    chunked: bool = True,
    caching: bool = True,
    max_model_len: int = MAX_MODEL_LEN,
) -> Scheduler:
    config = SchedulerConfig(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        enable_chunked_prefill=chunked,
    )
    return Scheduler(config, KVCacheManager(num_blocks, BLOCK, caching), max_model_len)


def prompt_of(n: int, start: int = 1) -> list[int]:
    return [(start + 13 * i) % 997 for i in range(n)]


class PagedDriver:
    """Runs scheduler steps against a simulated paged KV cache."""

    def __init__(self, sched: Scheduler, fn: TokenFn = next_token) -> None:
        self.sched = sched
        self.fn = fn
        self.kv: dict[int, list[int | None]] = {}
        self.requests: dict[str, Request] = {}
        self.steps: list[SchedulerOutput] = []

    def add(self, *requests: Request) -> None:
        for req in requests:
            self.requests[req.request_id] = req
            self.sched.add_request(req)

    def _slot(self, block_ids: list[int], pos: int) -> tuple[list[int | None], int]:
        return self.kv.setdefault(block_ids[pos // BLOCK], [None] * BLOCK), pos % BLOCK

    def execute(self, out: SchedulerOutput) -> ModelRunnerOutput:
        # As every attention backend does: the whole batch's KV is written before any row reads
        # (a request may hit prefix blocks that an earlier row of the same step computes).
        for sr in out.scheduled:
            req = self.requests[sr.req_id]
            end = sr.start_pos + sr.num_tokens
            assert len(sr.block_ids) * BLOCK >= end, "block table too short"
            assert sr.token_ids == req.all_token_ids[sr.start_pos : end], "wrong chunk"
            for j, tok in enumerate(sr.token_ids):
                slots, k = self._slot(sr.block_ids, sr.start_pos + j)
                slots[k] = tok
        sampled: list[list[int]] = []
        for sr in out.scheduled:
            req = self.requests[sr.req_id]
            end = sr.start_pos + sr.num_tokens
            if not sr.sample:
                assert end < req.num_tokens
                sampled.append([])
                continue
            assert end == req.num_tokens
            history = []
            for pos in range(end):
                slots, k = self._slot(sr.block_ids, pos)
                history.append(slots[k])
            assert None not in history, f"{sr.req_id} reads KV that was never written"
            sampled.append([self.fn(sr.req_id, history)])  # type: ignore[arg-type]
        return ModelRunnerOutput(sampled)

    def step(self) -> SchedulerOutput:
        out = self.sched.schedule()
        ids = [sr.req_id for sr in out.scheduled]
        assert len(ids) == len(set(ids))
        assert sum(sr.num_tokens for sr in out.scheduled) == out.num_scheduled_tokens
        self.sched.update_from_output(out, self.execute(out))
        self.steps.append(out)
        check_block_accounting(self.sched)
        return out

    def run(self, max_steps: int = 1000) -> None:
        for _ in range(max_steps):
            if not self.sched.has_unfinished_requests():
                return
            self.step()
        raise AssertionError("requests did not finish")


def check_block_accounting(sched: Scheduler) -> None:
    """Every block is either free or held; held counts match the requests' block tables."""
    pool = sched.kv.pool
    held: dict[int, int] = {}
    for blocks in sched.kv.req_blocks.values():
        for b in blocks:
            held[b.block_id] = held.get(b.block_id, 0) + 1
    for block in pool.blocks:
        assert block.ref_cnt == held.get(block.block_id, 0), block
    assert pool.num_free_blocks == pool.num_blocks - len(held)
    for rid in sched.kv.req_blocks:
        assert rid in sched.requests


# ------------------------------------------------------------------------ requests
def test_duplicate_request_id_raises() -> None:
    sched = make_scheduler()
    sched.add_request(make_request("a", [1, 2, 3]))
    with pytest.raises(ValueError, match="already in the engine"):
        sched.add_request(make_request("a", [4, 5]))


def test_single_request_matches_reference() -> None:
    sched = make_scheduler()
    driver = PagedDriver(sched)
    req = make_request("a", prompt_of(10), max_tokens=12)
    driver.add(req)
    driver.run()
    assert req.output_token_ids == reference_tokens(prompt_of(10), 12)
    assert req.status is RequestStatus.FINISHED_LENGTH_CAPPED
    assert req.status.finish_reason == "length"
    assert sched.kv.pool.num_free_blocks == sched.kv.pool.num_blocks
    assert not sched.requests


def test_empty_schedule_when_idle() -> None:
    sched = make_scheduler()
    out = sched.schedule()
    assert out.is_empty and out.num_scheduled_tokens == 0


# -------------------------------------------------------------------------- budget
def test_token_budget_respected_every_step() -> None:
    budget = 16
    sched = make_scheduler(num_blocks=128, max_num_batched_tokens=budget)
    driver = PagedDriver(sched)
    prompts = {f"r{i}": prompt_of(3 + 7 * i, start=i) for i in range(6)}
    for rid, prompt in prompts.items():
        driver.add(make_request(rid, prompt, max_tokens=5))
    driver.run()
    assert all(0 < s.num_scheduled_tokens <= budget for s in driver.steps)
    assert any(s.num_scheduled_tokens == budget for s in driver.steps)
    for rid, prompt in prompts.items():
        assert driver.requests[rid].output_token_ids == reference_tokens(prompt, 5)


def test_default_budget() -> None:
    chunked = make_scheduler(max_num_batched_tokens=None, max_model_len=100)
    assert chunked.max_num_batched_tokens == DEFAULT_MAX_NUM_BATCHED_TOKENS
    whole = make_scheduler(max_num_batched_tokens=None, chunked=False, max_model_len=20000)
    assert whole.max_num_batched_tokens == 20000


def test_chunked_prefill_splits_a_long_prompt() -> None:
    sched = make_scheduler(max_num_batched_tokens=16)
    driver = PagedDriver(sched)
    prompt = prompt_of(40)
    req = make_request("long", prompt, max_tokens=3)
    driver.add(req)

    chunks = [driver.step().scheduled[0] for _ in range(3)]
    assert [c.start_pos for c in chunks] == [0, 16, 32]
    assert [c.num_tokens for c in chunks] == [16, 16, 8]
    assert [c.sample for c in chunks] == [False, False, True]
    assert [c.token_ids for c in chunks] == [prompt[0:16], prompt[16:32], prompt[32:40]]
    assert len(chunks[0].block_ids) == 4 and len(chunks[2].block_ids) == 10
    assert chunks[1].block_ids[:4] == chunks[0].block_ids
    assert req.num_output_tokens == 1

    decode = driver.step().scheduled[0]
    assert (decode.start_pos, decode.num_tokens, decode.sample) == (40, 1, True)
    driver.run()
    assert req.output_token_ids == reference_tokens(prompt, 3)


def test_without_chunked_prefill_a_prompt_waits_for_a_whole_budget() -> None:
    sched = make_scheduler(max_num_batched_tokens=16, chunked=False)
    driver = PagedDriver(sched)
    driver.add(make_request("a", prompt_of(10), max_tokens=4))
    driver.step()
    driver.add(make_request("b", prompt_of(16, start=5), max_tokens=2))
    out = driver.step()  # a's decode (1) + b's whole prompt (16) > 16: b waits
    assert [sr.req_id for sr in out.scheduled] == ["a"]
    assert sched.num_waiting == 1
    driver.run()
    assert all(s.num_scheduled_tokens <= 16 for s in driver.steps)
    assert all(sr.sample for s in driver.steps for sr in s.scheduled)
    assert driver.requests["b"].output_token_ids == reference_tokens(prompt_of(16, start=5), 2)


def test_decodes_are_scheduled_before_new_prefills() -> None:
    sched = make_scheduler(max_num_batched_tokens=8)
    driver = PagedDriver(sched)
    driver.add(make_request("a", prompt_of(5), max_tokens=6), make_request("b", prompt_of(2, 9), max_tokens=6))
    driver.step()
    driver.add(make_request("c", prompt_of(20, start=3), max_tokens=2))
    out = driver.step()
    assert [(sr.req_id, sr.num_tokens) for sr in out.scheduled] == [("a", 1), ("b", 1), ("c", 6)]
    assert not out.scheduled[2].sample
    out = driver.step()
    assert [(sr.req_id, sr.num_tokens) for sr in out.scheduled] == [("a", 1), ("b", 1), ("c", 6)]
    driver.run()
    assert driver.requests["c"].output_token_ids == reference_tokens(prompt_of(20, start=3), 2)


def test_max_num_seqs() -> None:
    sched = make_scheduler(max_num_seqs=2)
    driver = PagedDriver(sched)
    prompts = {rid: prompt_of(4 + i, start=i) for i, rid in enumerate("abcd")}
    driver.add(*(make_request(rid, p, max_tokens=3 + i) for i, (rid, p) in enumerate(prompts.items())))
    out = driver.step()
    assert [sr.req_id for sr in out.scheduled] == ["a", "b"]
    assert sched.num_waiting == 2
    while sched.has_unfinished_requests():
        out = driver.step()
        assert len(out.scheduled) <= 2 and sched.num_running <= 2
    first_c = next(i for i, s in enumerate(driver.steps) if any(sr.req_id == "c" for sr in s.scheduled))
    assert first_c == 3  # a finishes in the third step, then c takes its seat
    for i, (rid, p) in enumerate(prompts.items()):
        assert driver.requests[rid].output_token_ids == reference_tokens(p, 3 + i)


# ---------------------------------------------------------------------- preemption
def test_preemption_of_a_later_request_frees_its_blocks() -> None:
    sched = make_scheduler(num_blocks=4, caching=False)
    driver = PagedDriver(sched)
    a = make_request("a", prompt_of(8), max_tokens=3)
    b = make_request("b", prompt_of(6, start=50), max_tokens=3)
    driver.add(a, b)
    driver.step()  # a: 2 blocks, b: 2 blocks, none free
    assert sched.kv.pool.num_free_blocks == 0
    b_tokens = list(b.all_token_ids)

    out = driver.step()  # a's 9th token needs a third block: b (admitted last) is preempted
    assert out.preempted_req_ids == {"b"}
    assert [sr.req_id for sr in out.scheduled] == ["a"]
    assert b.status is RequestStatus.PREEMPTED
    assert b.num_computed_tokens == 0 and b.num_preemptions == 1
    assert sched.num_preemptions == 1
    assert sched.kv.get_block_ids("b") == []
    assert sched.kv.pool.num_free_blocks == 1
    assert list(sched.waiting) == [b] and sched.running == [a]
    assert b.all_token_ids == b_tokens  # keeps the token it already produced

    driver.run()
    assert a.output_token_ids == reference_tokens(prompt_of(8), 3)
    assert b.output_token_ids == reference_tokens(prompt_of(6, start=50), 3)
    recompute = next(sr for s in driver.steps[2:] for sr in s.scheduled if sr.req_id == "b")
    assert recompute.start_pos == 0 and recompute.token_ids == b_tokens and recompute.sample


def test_preempted_request_goes_back_to_the_head_of_waiting() -> None:
    sched = make_scheduler(num_blocks=4, caching=False)
    driver = PagedDriver(sched)
    driver.add(make_request("a", prompt_of(8), max_tokens=2), make_request("b", prompt_of(6, 50), max_tokens=2))
    driver.step()
    driver.add(make_request("c", prompt_of(3, 70), max_tokens=2))
    out = driver.step()
    assert out.preempted_req_ids == {"b"}
    assert [r.request_id for r in sched.waiting] == ["b", "c"]
    # No new request is admitted in a step that preempted.
    assert [sr.req_id for sr in out.scheduled] == ["a"]


@pytest.mark.parametrize("caching", [False, True])
@pytest.mark.parametrize("chunked", [True, False])
def test_preempted_requests_finish_with_the_same_tokens_as_with_a_big_cache(caching: bool, chunked: bool) -> None:
    prompts = {f"r{i}": prompt_of(5 + 3 * i, start=11 * i) for i in range(5)}
    max_tokens = {rid: 10 + 2 * i for i, rid in enumerate(prompts)}

    def run(num_blocks: int) -> tuple[dict[str, list[int]], Scheduler]:
        sched = make_scheduler(
            num_blocks=num_blocks,
            max_num_batched_tokens=12 if chunked else 64,  # unchunked: the budget covers max_model_len
            chunked=chunked,
            caching=caching,
            max_model_len=64,
        )
        driver = PagedDriver(sched)
        driver.add(*(make_request(rid, p, max_tokens=max_tokens[rid]) for rid, p in prompts.items()))
        driver.run()
        assert sched.kv.pool.num_free_blocks == num_blocks
        return {rid: r.output_token_ids for rid, r in driver.requests.items()}, sched

    big, big_sched = run(256)
    small, small_sched = run(10)  # the longest request alone needs 9 blocks
    assert big_sched.num_preemptions == 0
    assert small_sched.num_preemptions > 0
    assert small == big
    assert big == {rid: reference_tokens(p, max_tokens[rid]) for rid, p in prompts.items()}


def test_preemption_with_prefix_caching_reuses_the_victims_blocks() -> None:
    sched = make_scheduler(num_blocks=4, caching=True)
    driver = PagedDriver(sched)
    a = make_request("a", prompt_of(8), max_tokens=2)
    b = make_request("b", prompt_of(6, start=50), max_tokens=2)
    driver.add(a, b)
    driver.step()
    out = driver.step()
    assert out.preempted_req_ids == {"b"}
    driver.run()
    # b's first full block survived in the free queue and was a hit when b came back.
    recompute = next(sr for s in driver.steps[2:] for sr in s.scheduled if sr.req_id == "b")
    assert recompute.start_pos == BLOCK
    assert b.output_token_ids == reference_tokens(prompt_of(6, start=50), 2)
    assert b.num_cached_tokens == 0  # counted at first scheduling only


# ---------------------------------------------------------------------------- stops
def scripted(script: list[int], prompt_len: int) -> TokenFn:
    """A driver that emits ``script`` in order, whatever the history."""
    return lambda req_id, history: script[len(history) - prompt_len]


SCRIPT = [5, 9, 2, 9, 7, 3, 9, 4, 6, 8, 1, 0]


def run_scripted(req: Request, **sched_kwargs: int) -> PagedDriver:
    sched = make_scheduler(**sched_kwargs)  # type: ignore[arg-type]
    driver = PagedDriver(sched, scripted(SCRIPT, req.num_prompt_tokens))
    driver.add(req)
    driver.run()
    assert sched.kv.pool.num_free_blocks == sched.kv.pool.num_blocks
    return driver


def test_stop_on_eos() -> None:
    req = make_request("a", [1, 2, 3], max_tokens=10, eos_token_id=9)
    run_scripted(req)
    assert req.output_token_ids == [5, 9]
    assert req.status is RequestStatus.FINISHED_STOPPED
    assert req.status.finish_reason == "stop"
    assert req.stop_reason is None


def test_ignore_eos_runs_to_max_tokens() -> None:
    req = make_request("a", [1, 2, 3], max_tokens=10, eos_token_id=9, ignore_eos=True)
    run_scripted(req)
    assert req.output_token_ids == SCRIPT[:10]
    assert req.status is RequestStatus.FINISHED_LENGTH_CAPPED


def test_no_eos_token_id_never_stops_on_eos() -> None:
    req = make_request("a", [1, 2, 3], max_tokens=6, eos_token_id=None)
    run_scripted(req)
    assert req.output_token_ids == SCRIPT[:6]


def test_stop_token_ids_set_stop_reason() -> None:
    req = make_request("a", [1, 2, 3], max_tokens=10, stop_token_ids=[7, 4])
    run_scripted(req)
    assert req.output_token_ids == [5, 9, 2, 9, 7]  # the stop token is kept
    assert req.status is RequestStatus.FINISHED_STOPPED
    assert req.stop_reason == 7


def test_stop_token_ids_apply_even_with_ignore_eos() -> None:
    req = make_request("a", [1], max_tokens=10, eos_token_id=9, ignore_eos=True, stop_token_ids=[3])
    run_scripted(req)
    assert req.output_token_ids == SCRIPT[:6] and req.stop_reason == 3


def test_min_tokens_suppresses_eos_and_stop_ids() -> None:
    req = make_request("a", [1, 2, 3], max_tokens=10, eos_token_id=9, min_tokens=3)
    run_scripted(req)
    assert req.output_token_ids == [5, 9, 2, 9]  # the eos at index 1 is ignored, index 3 stops
    assert req.status is RequestStatus.FINISHED_STOPPED

    req = make_request("b", [1, 2, 3], max_tokens=10, stop_token_ids=[2], min_tokens=2)
    run_scripted(req)
    assert req.output_token_ids == [5, 9, 2]  # the 3rd token is allowed to stop
    assert req.stop_reason == 2

    req = make_request("c", [1, 2, 3], max_tokens=10, stop_token_ids=[5], min_tokens=1)
    run_scripted(req)
    assert req.output_token_ids == [5]


def test_max_tokens_finishes_with_length() -> None:
    req = make_request("a", [1, 2, 3], max_tokens=4, eos_token_id=1000)
    run_scripted(req)
    assert req.output_token_ids == SCRIPT[:4]
    assert req.status is RequestStatus.FINISHED_LENGTH_CAPPED
    assert req.status.finish_reason == "length"
    assert req.stop_reason is None


def test_max_model_len_finishes_with_length() -> None:
    req = make_request("a", [1, 2, 3], max_tokens=10)
    run_scripted(req, max_model_len=7)
    assert req.output_token_ids == SCRIPT[:4]
    assert req.status is RequestStatus.FINISHED_LENGTH_CAPPED


def test_finished_request_is_reported_to_the_runner_once() -> None:
    sched = make_scheduler()
    driver = PagedDriver(sched)
    driver.add(make_request("a", [1, 2], max_tokens=1), make_request("b", [3, 4], max_tokens=3))
    driver.step()  # a finishes here
    assert driver.step().finished_req_ids == {"a"}
    assert driver.step().finished_req_ids == set()


# ---------------------------------------------------------------------------- abort
def test_abort_frees_blocks_at_once() -> None:
    sched = make_scheduler(num_blocks=16)
    driver = PagedDriver(sched)
    a = make_request("a", prompt_of(9), max_tokens=10)
    b = make_request("b", prompt_of(5, 40), max_tokens=10)
    driver.add(a, b)
    driver.step()
    assert sched.kv.pool.num_free_blocks == 16 - 3 - 2

    out = sched.schedule()  # a is aborted while this step runs
    runner_out = driver.execute(out)
    done = sched.finish_requests(["a", "nope"], RequestStatus.FINISHED_ABORTED)
    assert done == [a]
    assert a.status is RequestStatus.FINISHED_ABORTED and a.status.finish_reason == "abort"
    assert sched.kv.pool.num_free_blocks == 16 - 2
    assert sched.kv.get_block_ids("a") == []
    assert sched.running == [b]
    assert sched.finish_requests(["a"], RequestStatus.FINISHED_ABORTED) == []
    # The runner's token for the aborted request is dropped.
    updates = sched.update_from_output(out, runner_out)
    assert [r.request_id for r, _ in updates] == ["b"]
    assert a.output_token_ids == [next_token("a", prompt_of(9))]
    assert driver.step().finished_req_ids == {"a"}
    check_block_accounting(sched)


def test_abort_waiting_and_preempted_requests() -> None:
    sched = make_scheduler(max_num_seqs=1)
    driver = PagedDriver(sched)
    a = make_request("a", prompt_of(4), max_tokens=4)
    b = make_request("b", prompt_of(4, 9), max_tokens=4)
    driver.add(a, b)
    driver.step()
    assert sched.finish_requests(["b"], RequestStatus.FINISHED_ABORTED) == [b]
    assert sched.num_waiting == 0
    driver.run()
    assert b.output_token_ids == []

    sched = make_scheduler(num_blocks=4, caching=False)
    driver = PagedDriver(sched)
    a = make_request("a", prompt_of(8), max_tokens=3)
    b = make_request("b", prompt_of(6, 50), max_tokens=3)
    driver.add(a, b)
    driver.step()
    driver.step()
    assert b.status is RequestStatus.PREEMPTED
    assert sched.finish_requests(["b"], RequestStatus.FINISHED_ABORTED) == [b]
    assert not sched.waiting
    driver.run()
    assert sched.kv.pool.num_free_blocks == 4


# --------------------------------------------------------------------- prefix caching
def test_prefix_caching_second_request_gets_cached_tokens() -> None:
    sched = make_scheduler()
    driver = PagedDriver(sched)
    shared = prompt_of(10)
    first = make_request("first", shared + [1], max_tokens=3)
    driver.add(first)
    driver.run()
    assert first.num_cached_tokens == 0

    second = make_request("second", shared + [2, 3], max_tokens=3)
    driver.add(second)
    out = driver.step()
    assert second.num_cached_tokens == 8  # two full blocks of the shared 10 tokens
    assert out.scheduled[0].start_pos == 8
    assert out.scheduled[0].token_ids == (shared + [2, 3])[8:]
    driver.run()
    # The tokens come from the driver reading the cached KV blocks back.
    assert second.output_token_ids == reference_tokens(shared + [2, 3], 3)
    assert sched.kv.prefix_hits == 8


def test_prefix_caching_between_concurrent_requests() -> None:
    sched = make_scheduler(max_num_batched_tokens=64)
    driver = PagedDriver(sched)
    shared = prompt_of(12)
    first = make_request("first", shared + [1, 2], max_tokens=4)
    driver.add(first)
    driver.step()
    second = make_request("second", shared + [3], max_tokens=4)
    driver.add(second)
    driver.step()
    assert second.num_cached_tokens == 12
    assert sched.kv.get_block_ids("second")[:3] == sched.kv.get_block_ids("first")[:3]
    driver.run()
    assert first.output_token_ids == reference_tokens(shared + [1, 2], 4)
    assert second.output_token_ids == reference_tokens(shared + [3], 4)


def test_prefix_hit_on_blocks_computed_in_the_same_step() -> None:
    """Blocks are cached when scheduled: a request admitted later in the same step hits them."""
    sched = make_scheduler(max_num_batched_tokens=64)
    driver = PagedDriver(sched)
    shared = prompt_of(12)
    first = make_request("first", shared + [1, 2], max_tokens=4)
    second = make_request("second", shared + [3], max_tokens=4)
    driver.add(first, second)
    out = driver.step()
    assert [(sr.req_id, sr.start_pos, sr.num_tokens) for sr in out.scheduled] == [("first", 0, 14), ("second", 12, 1)]
    assert second.num_cached_tokens == 12
    assert out.scheduled[1].block_ids[:3] == out.scheduled[0].block_ids[:3]
    driver.run()
    assert first.output_token_ids == reference_tokens(shared + [1, 2], 4)
    assert second.output_token_ids == reference_tokens(shared + [3], 4)


def test_prefix_caching_disabled_gives_no_cached_tokens() -> None:
    sched = make_scheduler(caching=False)
    driver = PagedDriver(sched)
    driver.add(make_request("first", prompt_of(10), max_tokens=2))
    driver.run()
    second = make_request("second", prompt_of(10), max_tokens=2)
    driver.add(second)
    driver.run()
    assert second.num_cached_tokens == 0


# ------------------------------------------------------------------------- randomized
@pytest.mark.parametrize("seed", range(6))
def test_random_workload_matches_reference(seed: int) -> None:
    """Shared prefixes, a tight cache and budget, arrivals over time and aborts: every request
    that is not aborted ends with the reference tokens; blocks are accounted for every step."""
    rng = random.Random(seed)
    chunked = seed % 2 == 0
    sched = make_scheduler(
        num_blocks=rng.choice([12, 16, 24]),
        max_num_seqs=rng.choice([2, 3, 8]),
        max_num_batched_tokens=rng.choice([8, 16]) if chunked else 48,
        chunked=chunked,
        caching=seed % 3 != 0,
        max_model_len=48,
    )
    driver = PagedDriver(sched)
    bases = [prompt_of(12, start=100 * i) for i in range(3)]
    pending = []
    for i in range(24):
        prompt = rng.choice(bases)[: rng.randint(1, 12)] + prompt_of(rng.randint(0, 10), start=rng.randint(0, 999))
        pending.append(make_request(f"r{i}", prompt or [1], max_tokens=rng.randint(1, 20)))
    aborted: set[str] = set()
    for _ in range(2000):
        while pending and rng.random() < 0.4:
            driver.add(pending.pop(0))
        if not pending and not sched.has_unfinished_requests():
            break
        if sched.requests and rng.random() < 0.05:
            victim = rng.choice(sorted(sched.requests))
            sched.finish_requests([victim], RequestStatus.FINISHED_ABORTED)
            aborted.add(victim)
        driver.step()
        assert sched.num_running <= sched.max_num_seqs
        assert all(s.num_scheduled_tokens <= sched.max_num_batched_tokens for s in driver.steps)
    assert not pending and not sched.has_unfinished_requests()
    assert sched.kv.pool.num_free_blocks == sched.kv.pool.num_blocks
    for rid, req in driver.requests.items():
        if rid in aborted:
            continue
        expected = reference_tokens(req.prompt_token_ids, req.max_tokens)
        n = min(req.max_tokens, 48 - req.num_prompt_tokens)
        assert req.output_token_ids == expected[:n], rid


def test_hit_rate_counts_each_request_once_despite_retries_and_preemption() -> None:
    sched = make_scheduler(num_blocks=5, max_num_batched_tokens=64)
    driver = PagedDriver(sched)
    shared = prompt_of(8)
    first = make_request("first", shared + [1], max_tokens=6)
    driver.add(first)
    driver.step()
    second = make_request("second", shared + [2], max_tokens=6)
    driver.add(second)
    driver.run()
    assert sched.num_preemptions > 0 and second.num_cached_tokens == 8
    queries = first.num_prompt_tokens + second.num_prompt_tokens
    assert sched.kv.prefix_queries == queries
    assert sched.kv.prefix_hits == second.num_cached_tokens
