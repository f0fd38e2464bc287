"""Speculative decoding's plain objects: the batched n-gram lookup equals a per-sequence search,
the token-history matrix follows requests, the off-switch policy, the counters' log line, the
scheduler's lookahead slots for proposers that write KV ahead."""

from __future__ import annotations

import logging
import random

import numpy as np
import pytest

from vllm_core.config import SchedulerConfig, SpeculativeConfig
from vllm_core.core.kv_cache_manager import KVCacheManager
from vllm_core.core.sched_output import ScheduledRequest
from vllm_core.core.scheduler import Scheduler
from vllm_core.request import Request
from vllm_core.sampling_params import SamplingParams
from vllm_core.spec_decode.history import PAD, TokenHistory
from vllm_core.spec_decode.metrics import LOG_INTERVAL_S, SpecDecodeCounters
from vllm_core.spec_decode.ngram import batched_ngram_lookup
from vllm_core.spec_decode.policy import MIN_BACKOFF, SpeculationPolicy


def slow_lookup(tokens: list[int], min_n: int, max_n: int, k: int) -> list[int]:
    """The definition: the continuation of the latest earlier occurrence of the longest suffix."""
    total = len(tokens)
    for n in range(min(max_n, total - 1), min_n - 1, -1):
        suffix = tokens[total - n:]
        for i in range(total - n - 1, -1, -1):
            if tokens[i : i + n] == suffix:
                return tokens[i + n : i + n + k]
    return []


def test_batched_ngram_lookup_equals_the_definition_row_by_row() -> None:
    rng = random.Random(0)
    seqs = [[rng.randrange(4) for _ in range(rng.randint(1, 40))] for _ in range(200)]
    width = max(map(len, seqs))
    tokens = np.full((len(seqs), width), PAD, dtype=np.int64)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = s
    for lo, hi, k in [(1, 3, 4), (2, 2, 1), (1, 5, 6)]:
        drafts, counts = batched_ngram_lookup(tokens, np.array([len(s) for s in seqs]), lo, hi, k)
        for i, s in enumerate(seqs):
            assert drafts[i, : counts[i]].tolist() == slow_lookup(s, lo, hi, k), (s, lo, hi, k)


def row(req_id: str, prompt: list[int], output: list[int]) -> ScheduledRequest:
    return ScheduledRequest(req_id, [0], 0, [0], SamplingParams(), True, len(output), None,
                            prompt_token_ids=prompt, output_token_ids=output)


def test_token_history_appends_and_recopies_when_out_of_step() -> None:
    h = TokenHistory(num_rows=1, width=4)
    out: list[int] = []
    slots = h.update([row("a", [1, 2, 3], out)], [[4, 5]])
    assert h.tokens[slots[0], :5].tolist() == [1, 2, 3, 4, 5] and h.lengths[slots[0]] == 5
    out += [4, 5]
    slots = h.update([row("a", [1, 2, 3], out), row("b", [9], [])], [[6], [8]])  # grows rows and width
    assert h.tokens[slots[0], :6].tolist() == [1, 2, 3, 4, 5, 6] and h.tokens[slots[1], :2].tolist() == [9, 8]
    # out of step (the request's output is not what the history holds): copied again
    slots = h.update([row("a", [1, 2, 3], [7])], [[]])
    assert h.lengths[slots[0]] == 4 and h.tokens[slots[0], :6].tolist() == [1, 2, 3, 7, PAD, PAD]
    h.remove({"a", "b"})
    assert not h.slot and (h.lengths == 0).all()


def test_policy_turns_speculation_off_above_the_batch_size() -> None:
    policy = SpeculationPolicy(SpeculativeConfig(num_speculative_tokens=3, disable_by_batch_size=2))
    assert policy.max_drafts(["a", "b"], 2) == [3, 3]
    assert policy.max_drafts(["a", "b", "c"], 3) == [0, 0, 0]
    assert policy.num_steps_off_by_batch == 1
    never = SpeculationPolicy(SpeculativeConfig(num_speculative_tokens=2, disable_by_batch_size=None))
    assert never.max_drafts(["x"] * 1000, 1000) == [2] * 1000


def test_policy_backs_off_a_request_whose_drafts_are_rejected_then_probes() -> None:
    policy = SpeculationPolicy(SpeculativeConfig(num_speculative_tokens=4, min_acceptance_rate=0.5))
    for _ in range(2):  # 1 -> 0.7 -> 0.49: below 0.5 after the second rejected step
        assert policy.max_drafts(["bad", "good"], 2) == [4, 4]
        policy.record("bad", 4, 0)
        policy.record("good", 4, 4)
    skipped = 0
    while policy.max_drafts(["bad", "good"], 2) == [0, 4]:
        skipped += 1
    assert skipped == MIN_BACKOFF  # then one probe step drafts again
    policy.record("bad", 4, 0)  # the probe fails: a longer pause
    assert [policy.max_drafts(["bad"], 1) for _ in range(2 * MIN_BACKOFF + 1)][-1] == [4]
    policy.finish_requests({"bad", "good"})
    assert policy.max_drafts(["bad"], 1) == [4]


def test_counters_and_their_periodic_log_line(caplog: pytest.LogCaptureFixture) -> None:
    c = SpecDecodeCounters(k=3)
    c.record(3, 2)
    c.record(3, 3)
    c.record(2, 0)
    s = c.snapshot()
    assert (s.num_drafts, s.num_draft_tokens, s.num_accepted_tokens, s.accepted_per_pos) == (3, 8, 5, (2, 2, 1))
    assert s.mean_acceptance_length == pytest.approx(1 + 5 / 3) and s.acceptance_rate == pytest.approx(5 / 8)
    with caplog.at_level(logging.INFO, logger="vllm_core.spec_decode"):
        c.maybe_log(now=c._last_log + 1)  # too soon
        assert not caplog.records
        c.maybe_log(now=c._last_log + LOG_INTERVAL_S)
    assert "mean acceptance length 2.67, accepted 5/8 draft tokens (62.5%)" in caplog.text
    assert "per-position acceptance 0.667, 0.667, 0.333" in caplog.text


def test_scheduler_keeps_lookahead_slots_for_a_proposer_within_max_model_len() -> None:
    kv = KVCacheManager(num_blocks=16, block_size=4, enable_caching=False)
    sched = Scheduler(SchedulerConfig(), kv, max_model_len=12, num_lookahead_slots=3)
    req = Request("r", [1, 2, 3, 4, 5], SamplingParams(max_tokens=8), None, 8, 0.0)
    sched.add_request(req)
    out = sched.schedule()
    assert len(out.scheduled[0].block_ids) == 2  # 5 prompt tokens + 3 lookahead slots = 8
    assert sched.kv.pool.num_free_blocks == 14
    req.num_computed_tokens = 10  # near max_model_len: the lookahead stops there
    assert sched._extra_lookahead(req, 1) == 1


def test_greedy_fast_path_equals_rejection_sampling_of_greedy_rows() -> None:
    import torch

    from vllm_core.sample.rejection import DraftBatch, verify_drafts, verify_greedy

    g = torch.Generator().manual_seed(0)
    num_drafts = [3, 0, 2, 4, 1]
    logits = torch.randn(sum(num_drafts) + len(num_drafts), 6, generator=g)
    target = logits.argmax(dim=-1)
    # drafts right about half the time
    flat = [int(target[r]) if torch.rand(1, generator=g) < 0.6 else 5 - int(target[r])
            for r in [start + t for start, k in zip([0, 4, 5, 8, 13], num_drafts) for t in range(k)]]
    drafts = DraftBatch(torch.tensor(flat), num_drafts)
    expected = verify_drafts(logits.softmax(-1), drafts, torch.ones(len(num_drafts), dtype=torch.bool))
    assert verify_greedy(target, drafts) == expected
    assert any(len(t) > 1 for t in expected) and any(len(t) < k + 1 for t, k in zip(expected, num_drafts))
