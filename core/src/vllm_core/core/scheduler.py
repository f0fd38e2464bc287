"""Continuous-batching scheduler: token budget, decodes first, chunked prefill, preemption.

Each step fills a token budget (``max_num_batched_tokens``). Running requests go first, in
arrival order: a decode costs one token, an unfinished prefill its next chunk. Then waiting
requests are admitted while budget, ``max_num_seqs`` and free KV blocks last; prompts longer
than the budget are split across steps (chunked prefill). When a running request needs a block
and none is free, the most recently admitted running request is preempted: its blocks are freed
and it goes back to the head of the queue to be recomputed later (its prompt plus the tokens
it already produced, so it continues with exactly the same tokens).

With ``async_scheduling`` the scheduler runs one step ahead of the results: a request sampled in
the step still on the device has a *pending* token. The next step feeds it as a placeholder
(``PLACEHOLDER_TOKEN_ID``; the runner takes the real id from device memory), computed tokens
advance at scheduling time, and a request whose pending token is its last is not scheduled
again. Token-level stops (EOS) are seen one step late; the extra token is dropped.

A waiting request that is not ``ready`` (a runner extension is still preparing it) or that a
step constraint refuses (LoRA: its adapter would exceed ``max_loras`` in this step) is skipped,
keeping its place in the queue, so it never holds up the requests behind it or the step.

Multi-token steps (speculative decoding): a running request may carry draft tokens proposed
after its last step (``Request.spec_token_ids``). They are fed after its last token in
*lookahead* slots (``allocate_slots(..., num_lookahead_tokens)``), the runner returns the
accepted ones plus one more token, and the rejected drafts' positions are rolled back
(``num_computed_tokens`` drops by their number). Drafts never enter the prefix cache: only
blocks of known tokens are cached, and a rejected draft never becomes a known token. A proposer
that writes KV of its own ahead of the known tokens (a draft model drafting ``k`` tokens after
the step) asks for ``num_lookahead_slots`` more slots on every allocation, capped at
``max_model_len``; they are only ever written, never cached.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from vllm_core.config import SchedulerConfig
from vllm_core.core.kv_cache_manager import KVCacheManager
from vllm_core.core.sched_output import ModelRunnerOutput, ScheduledRequest, SchedulerOutput
from vllm_core.core.step_constraint import StepConstraint
from vllm_core.core.stop import check_stop
from vllm_core.request import Request, RequestStatus

logger = logging.getLogger(__name__)

DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192
PLACEHOLDER_TOKEN_ID = -1
"""Stands for a token sampled by the step in flight (async scheduling)."""


def resolve_max_num_batched_tokens(
    config: SchedulerConfig, max_model_len: int, default: int = DEFAULT_MAX_NUM_BATCHED_TOKENS
) -> int:
    """The step's token budget: as configured, else ``default`` (the platform's; at least
    max_model_len when prompts cannot be chunked)."""
    if config.max_num_batched_tokens is not None:
        return config.max_num_batched_tokens
    if config.enable_chunked_prefill:
        return default
    return max(default, max_model_len)


class Scheduler:
    """Decides, every step, which requests run and how many tokens each computes."""

    def __init__(
        self,
        config: SchedulerConfig,
        kv_cache_manager: KVCacheManager,
        max_model_len: int,
        ready: Callable[[Request], bool] | None = None,
        constraints: Sequence[StepConstraint] = (),
        num_lookahead_slots: int = 0,
        placeholders: bool = True,
    ) -> None:
        """``ready(request)``: may a waiting request start now? (default: always; the engine
        asks its runner extensions). ``constraints``: features' rules on which waiting
        requests may join each step (``vllm_core.core.step_constraint``).
        ``num_lookahead_slots``: slots kept allocated past each request's scheduled tokens
        (see the module docstring). ``placeholders`` (async scheduling): False makes a request
        whose sampled token is still in flight wait for it instead of feeding a placeholder (with
        pipeline stages the first stage needs real token ids; several steps are in flight, each
        with its own requests)."""
        self.ready = ready
        self.constraints = list(constraints)
        self.num_lookahead_slots = num_lookahead_slots
        self.placeholders = placeholders
        self.max_num_seqs = config.max_num_seqs
        self.max_num_batched_tokens = resolve_max_num_batched_tokens(config, max_model_len)
        self.chunked_prefill = config.enable_chunked_prefill
        self.max_model_len = max_model_len
        self.async_scheduling = bool(config.async_scheduling)
        self.kv = kv_cache_manager
        self.requests: dict[str, Request] = {}
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self._finished_ids: set[str] = set()
        self.num_preemptions = 0

    # ----------------------------------------------------------------- requests in and out
    def add_request(self, request: Request) -> None:
        if request.request_id in self.requests:
            raise ValueError(f"request id {request.request_id!r} is already in the engine")
        self.requests[request.request_id] = request
        self.waiting.append(request)

    def finish_requests(self, request_ids: Iterable[str], status: RequestStatus) -> list[Request]:
        """End requests from outside the step (abort, stop string); frees their blocks at once."""
        done = []
        for rid in request_ids:
            req = self.requests.get(rid)
            if req is None or req.is_finished:
                continue
            if req.status is RequestStatus.RUNNING:
                self.running.remove(req)
            else:
                self.waiting.remove(req)
            req.status = status
            self._free(req)
            done.append(req)
        return done

    def _free(self, request: Request) -> None:
        self.kv.free(request)
        self.requests.pop(request.request_id, None)
        self._finished_ids.add(request.request_id)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def has_unfinished_requests(self) -> bool:
        return bool(self.running or self.waiting)

    # ----------------------------------------------------------------------------- schedule
    def schedule(self) -> SchedulerOutput:
        budget = self.max_num_batched_tokens
        scheduled: list[ScheduledRequest] = []
        preempted: set[str] = set()

        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            if req.num_pending_tokens and (not self.placeholders or self._last_token_in_flight(req)):
                i += 1
                continue
            num_new = min(req.num_tokens + req.num_pending_tokens - req.num_computed_tokens, budget)
            drafts = self._drafts_for(req, num_new, budget - num_new)
            lookahead = len(drafts) + self._extra_lookahead(req, num_new + len(drafts))
            while self.kv.allocate_slots(req, num_new, num_lookahead_tokens=lookahead) is None:
                victim = self.running.pop()
                self._preempt(victim)
                preempted.add(victim.request_id)
                if victim is req:
                    break
            if req.request_id in preempted:
                break
            scheduled.append(self._schedule_chunk(req, num_new, drafts))
            budget -= num_new + len(drafts)
            i += 1

        not_ready: list[Request] = []
        for constraint in self.constraints:
            constraint.begin_step([r.extensions for r in self.running])
        while not preempted and self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            req = self.waiting[0]
            if not self._may_start(req) or (req.num_pending_tokens and not self.placeholders):
                not_ready.append(self.waiting.popleft())
                continue
            hits, num_hit_tokens = self.kv.get_computed_blocks(req)
            num_new = req.num_tokens + req.num_pending_tokens - num_hit_tokens
            if num_new > budget and not self.chunked_prefill:
                break
            num_new = min(num_new, budget)
            lookahead = self._extra_lookahead(req, num_hit_tokens + num_new)  # num_computed_tokens is 0 here
            if self.kv.allocate_slots(req, num_new, hits, num_lookahead_tokens=lookahead) is None:
                break
            self.waiting.popleft()
            req.num_computed_tokens = num_hit_tokens
            if req.num_cached_tokens < 0:
                req.num_cached_tokens = num_hit_tokens
                self.kv.record_prefix_lookup(req.num_tokens, num_hit_tokens)
            req.status = RequestStatus.RUNNING
            self.running.append(req)
            scheduled.append(self._schedule_chunk(req, num_new))
            budget -= num_new
        self.waiting.extendleft(reversed(not_ready))

        finished, self._finished_ids = self._finished_ids, set()
        return SchedulerOutput(
            scheduled=scheduled,
            num_scheduled_tokens=self.max_num_batched_tokens - budget,
            finished_req_ids=finished,
            preempted_req_ids=preempted,
            async_step=self.async_scheduling,
        )

    def _may_start(self, req: Request) -> bool:
        """Ready (runner extensions) and admitted by every step constraint."""
        if self.ready is not None and not self.ready(req):
            return False
        return all(c.admit(req.extensions) for c in self.constraints)

    def _last_token_in_flight(self, req: Request) -> bool:
        """True when the token the device is sampling now ends the request by length."""
        return (
            req.num_output_tokens + req.num_pending_tokens >= req.max_tokens
            or req.num_tokens + req.num_pending_tokens >= self.max_model_len
        )

    def _extra_lookahead(self, req: Request, num_new: int) -> int:
        """The proposer's lookahead slots after ``num_new`` more tokens, within ``max_model_len``."""
        if not self.num_lookahead_slots:
            return 0
        room = self.max_model_len - (req.num_computed_tokens + num_new)
        return max(min(self.num_lookahead_slots, room), 0)

    def _drafts_for(self, req: Request, num_new: int, budget_left: int) -> list[int]:
        """The request's draft tokens that fit this step: only after its last known token,
        within the budget, ``max_tokens`` and ``max_model_len``; the rest are dropped."""
        if not req.spec_token_ids:
            return []
        drafts, req.spec_token_ids = req.spec_token_ids, []
        if self.async_scheduling or req.num_pending_tokens or num_new != req.num_tokens - req.num_computed_tokens:
            return []
        k = min(
            len(drafts), budget_left, req.max_tokens - req.num_output_tokens - 1,
            self.max_model_len - req.num_tokens,
        )
        return drafts[: max(k, 0)]

    def _schedule_chunk(self, req: Request, num_new: int, drafts: list[int] | None = None) -> ScheduledRequest:
        """The request's share of this step (its blocks are allocated); caches the full blocks
        of known tokens it completes and, in async mode, advances the request right away."""
        start = req.num_computed_tokens
        end = start + num_new
        known = req.all_token_ids[start:end]
        sample = end == req.num_tokens + req.num_pending_tokens
        self.kv.cache_blocks(req, min(end, req.num_tokens))
        drafts = drafts or []
        sr = ScheduledRequest(
            req_id=req.request_id,
            token_ids=known + [PLACEHOLDER_TOKEN_ID] * (num_new - len(known)) + drafts,
            start_pos=start,
            block_ids=self.kv.get_block_ids(req.request_id),
            sampling_params=req.sampling_params,
            sample=sample,
            num_output_tokens=req.num_output_tokens + req.num_pending_tokens,
            eos_token_id=req.eos_token_id,
            prompt_token_ids=req.prompt_token_ids,
            output_token_ids=req.output_token_ids,
            extensions=req.extensions,
            draft_token_ids=drafts,
        )
        if self.async_scheduling:
            req.num_computed_tokens = end
            req.num_pending_tokens += int(sample)
        return sr

    def _preempt(self, req: Request) -> None:
        logger.debug("preempting %s (recompute)", req.request_id)
        self.kv.free(req)
        req.status = RequestStatus.PREEMPTED
        req.num_computed_tokens = 0
        req.spec_token_ids = []
        req.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(req)

    # ----------------------------------------------------------------------- after the step
    def update_from_output(
        self, output: SchedulerOutput, runner_output: ModelRunnerOutput
    ) -> list[tuple[Request, list[int]]]:
        """Advance computed tokens (rolling back rejected drafts), append sampled ones, apply stop
        rules after each, free finished requests, keep the drafts proposed for the next step.

        Returns ``(request, new_token_ids)`` for every request that got tokens this step.
        """
        updates: list[tuple[Request, list[int]]] = []
        drafts = runner_output.draft_token_ids or {}
        for sr, tokens in zip(output.scheduled, runner_output.sampled_token_ids):
            req = self.requests.get(sr.req_id)
            if req is None or req.is_finished:
                continue  # finished or aborted while the step ran: its tokens are dropped
            if not self.async_scheduling:
                if req.status is not RequestStatus.RUNNING:
                    continue
                req.num_computed_tokens += sr.num_tokens
                if sr.draft_token_ids:  # roll back the positions of rejected drafts
                    req.num_computed_tokens -= len(sr.draft_token_ids) - max(len(tokens) - 1, 0)
            if not tokens:
                continue
            if self.async_scheduling:
                req.num_pending_tokens -= 1
            new: list[int] = []
            status = None
            for token in tokens:
                req.append_output_token(token)
                new.append(token)
                status = check_stop(req, self.max_model_len)
                if status is not None:
                    break
            self.kv.cache_blocks(req, min(req.num_computed_tokens, req.num_tokens))
            if status is not None:
                if req.status is RequestStatus.RUNNING:
                    self.running.remove(req)
                else:
                    self.waiting.remove(req)
                req.status = status
                self._free(req)
            elif sr.req_id in drafts:
                req.spec_token_ids = drafts[sr.req_id]
            updates.append((req, new))
        return updates
