"""``EngineCore``: scheduler + executor; token ids in, token ids out.

``step()`` is the whole loop: schedule, execute, update. Everything textual (tokenizing,
detokenizing, stop strings) happens outside, so the core can move to its own process.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import deque

from vllm_core.config import EngineConfig
from vllm_core.core.kv_cache_manager import KVCacheManager
from vllm_core.core.sched_output import ModelRunnerOutput, SchedulerOutput
from vllm_core.core.scheduler import Scheduler, resolve_max_num_batched_tokens
from vllm_core.engine.core_types import EngineCoreOutput, EngineCoreRequest
from vllm_core.executor import Executor, executor_class
from vllm_core.extensions.runner import step_constraints
from vllm_core.model_executor.model_loader.loader import LoadedModel
from vllm_core.platforms import resolve_platform
from vllm_core.platforms.interface import Platform
from vllm_core.request import Request, RequestStatus
from vllm_core.spec_decode.extension import proposer_lookahead_slots
from vllm_core.spec_decode.metrics import SpecDecodeCounters
from vllm_core.worker.model_runner import ModelRunner, PendingRunnerOutput

logger = logging.getLogger(__name__)


def freeze_startup_heap() -> None:
    """Collect once, then move every object alive now (imports, the model, the tokenizer) into
    the collector's permanent generation, as vLLM does after start-up. Oldest-generation
    collections during serving then scan only what was made since; unfrozen, one scanned the
    whole import graph (~170 ms on the GPU benchmark machine)."""
    gc.collect()
    gc.freeze()
    logger.debug("gc: %d start-up objects frozen", gc.get_freeze_count())


def start_engine_core(config: EngineConfig, use_tqdm: bool = False) -> tuple[Platform, LoadedModel, EngineCore]:
    """Resolve and set up the platform, start the executor (which loads the model on its
    workers), build the core, in that order. The platform learns the KV cache's config before
    the model loads (``prepare_kv_cache``), so it can prepare that memory meanwhile; whatever it
    set aside and the cache did not take is released once the core is built or the start failed."""
    platform = resolve_platform(config.device.device)
    platform.setup()
    cls = executor_class(config, platform)
    # workers in other processes size their own caches
    prepared = platform.prepare_kv_cache(config.cache) if cls.in_process else None
    try:
        executor = cls(config, platform, use_tqdm=use_tqdm)
        core = EngineCore(config, executor, prepared)
    finally:
        platform.kv_cache_allocated()
    return platform, executor.loaded, core


class EngineCore:
    """Owns the scheduler and the KV cache manager; runs steps through an ``Executor``."""

    def __init__(self, config: EngineConfig, executor: Executor, prepared_kv_bytes: int | None = None) -> None:
        """``prepared_kv_bytes``: what ``Platform.prepare_kv_cache`` set aside, the cache's budget."""
        self.config = config
        self.executor = executor
        self.platform = executor.platform
        loaded = executor.loaded
        sc = config.scheduler
        budget = resolve_max_num_batched_tokens(sc, loaded.max_model_len, self.platform.default_max_num_batched_tokens)
        self.kv_spec = executor.initialize(budget, prepared_kv_bytes)
        self.kv_cache_manager = KVCacheManager(
            self.kv_spec.num_blocks, self.kv_spec.block_size, config.cache.enable_prefix_caching
        )
        async_scheduling = sc.async_scheduling if sc.async_scheduling is not None else self.platform.async_scheduling
        self._async_when_allowed = False
        """Async scheduling is wanted, but a runner extension decides step by step."""
        if async_scheduling and not executor.supports_async_scheduling:
            logger.info("async scheduling only for steps that no runner extension needs the tokens of "
                        "(speculative decoding: steps that draft nothing)")
            async_scheduling, self._async_when_allowed = False, True
        self.num_async_steps = 0
        """Steps launched ahead of their results."""
        spec = config.speculative
        self.spec_decode_counters = None if spec is None else SpecDecodeCounters(spec.num_speculative_tokens)
        """Drafts verified and accepted, counted from the steps' outputs here, where every executor's
        outputs arrive (the runners may be other processes): vLLM's spec-decode counters."""
        self.scheduler = Scheduler(
            sc.model_copy(update={"async_scheduling": async_scheduling, "max_num_batched_tokens": budget}),
            self.kv_cache_manager, loaded.max_model_len,
            ready=lambda req: executor.is_ready(req.request_id), placeholders=executor.accepts_placeholders,
            constraints=step_constraints(config),
            num_lookahead_slots=proposer_lookahead_slots(config.speculative),
        )
        self._steps_ahead = executor.steps_ahead
        """Steps left in flight when an async step returns (1: one step ahead; pipeline stages:
        stages - 1)."""
        self._in_flight: deque[tuple[SchedulerOutput, PendingRunnerOutput]] = deque()
        self._first_scheduled: dict[str, float] = {}
        """req_id -> when it was first scheduled, until its first output carries it."""
        self.step_num_tokens: list[int] | None = None
        """Tokens scheduled per step since the caller last emptied it (vllm:iteration_tokens_total);
        None (the default, offline) records nothing."""
        max_conc = self.kv_spec.num_tokens / loaded.max_model_len
        logger.info(
            "KV cache: %d blocks of %d tokens (%.1f MiB); %.1fx concurrency at max_model_len=%d",
            self.kv_spec.num_blocks, self.kv_spec.block_size,
            self.kv_spec.num_blocks * self.kv_spec.bytes_per_block / 2**20, max_conc, loaded.max_model_len,
        )
        freeze_startup_heap()

    @property
    def runner(self) -> ModelRunner:
        """The driver worker's model runner (in-process executors)."""
        runner: ModelRunner = self.executor.runner  # type: ignore[attr-defined]
        return runner

    def add_request(self, req: EngineCoreRequest) -> None:
        self.scheduler.add_request(
            Request(
                req.request_id, req.prompt_token_ids, req.sampling_params,
                req.eos_token_id, req.max_tokens, req.arrival_time, req.extensions,
            )
        )
        self.executor.add_request(req)

    def abort_requests(self, request_ids: list[str]) -> None:
        self.scheduler.finish_requests(request_ids, RequestStatus.FINISHED_ABORTED)
        for rid in request_ids:
            self._first_scheduled.pop(rid, None)

    def _note_scheduled(self, sched_out: SchedulerOutput) -> None:
        if sched_out.is_empty:
            return
        if self.step_num_tokens is not None:
            self.step_num_tokens.append(sched_out.num_scheduled_tokens)
        now = time.monotonic()
        for sr in sched_out.scheduled:
            self._first_scheduled.setdefault(sr.req_id, now)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests() or bool(self._in_flight)

    def step(self) -> list[EngineCoreOutput]:
        """Schedule, run, update. With async scheduling the step launched here is collected by
        a later call, and this call returns the oldest step's tokens: the host schedules and
        prepares step N+1 while the device runs step N (with pipeline stages, ``stages - 1``
        steps stay in flight, one per stage, each with requests of its own)."""
        if self._async_when_allowed:
            drained = self._choose_async()
            if drained is not None:
                return drained
        sched_out = self.scheduler.schedule()
        self._note_scheduled(sched_out)
        if not self.scheduler.async_scheduling:
            runner_out = self.executor.execute_model(sched_out)
            return self._update(sched_out, runner_out)
        pending = self.executor.execute_model_async(sched_out)
        if not sched_out.is_empty:
            self.num_async_steps += 1
            self._in_flight.append((sched_out, pending))
        keep = 0 if sched_out.is_empty else self._steps_ahead  # nothing new started: wait for the oldest
        if len(self._in_flight) <= keep:
            return []
        return self._collect_oldest()

    def _collect_oldest(self) -> list[EngineCoreOutput]:
        prev_out, pending = self._in_flight.popleft()
        runner_out = pending.get()
        return self._update(prev_out, runner_out)

    def _choose_async(self) -> list[EngineCoreOutput] | None:
        """Per step, when an extension needs some steps' tokens (speculative decoding): run
        ahead of the results when it allows, else synchronously. Switching to synchronous
        collects the steps in flight first (their outputs are returned; the next call schedules)."""
        sched = self.scheduler
        ids = [r.request_id for r in sched.running]
        ids += [r.request_id for r in list(sched.waiting)[: max(sched.max_num_seqs - len(ids), 0)]]
        want = self.executor.allows_async_step(ids)
        if want == sched.async_scheduling:
            return None
        if not want and self._in_flight:
            outputs: list[EngineCoreOutput] = []
            while self._in_flight:
                outputs += self._collect_oldest()
            sched.async_scheduling = False
            return outputs
        sched.async_scheduling = want
        return None

    def _update(self, sched_out: SchedulerOutput, runner_out: ModelRunnerOutput) -> list[EngineCoreOutput]:
        counters = self.spec_decode_counters
        if counters is not None:
            for sr, tokens in zip(sched_out.scheduled, runner_out.sampled_token_ids):
                if sr.draft_token_ids and tokens:  # the accepted drafts, then one sampled token
                    counters.record(len(sr.draft_token_ids), len(tokens) - 1)
        return self._outputs(self.scheduler.update_from_output(sched_out, runner_out), runner_out)

    def _outputs(
        self, updates: list[tuple[Request, list[int]]], runner_out: ModelRunnerOutput
    ) -> list[EngineCoreOutput]:
        outs = make_core_outputs(updates, runner_out)
        for out in outs:
            if out.new_token_ids:
                out.scheduled_time = self._first_scheduled.pop(out.request_id, None)
            if out.finished:
                self._first_scheduled.pop(out.request_id, None)
        return outs


def make_core_outputs(updates: list[tuple[Request, list[int]]], runner_out: ModelRunnerOutput) -> list[EngineCoreOutput]:
    """One output per request that got tokens, with its logprobs; plus token-less outputs
    carrying the prompt logprobs of prefill chunks that sampled nothing."""
    logprobs = runner_out.logprobs or {}
    prompt = dict(runner_out.prompt_logprobs or {})
    outs = []
    for req, tokens in updates:
        lp = logprobs.get(req.request_id)
        outs.append(
            EngineCoreOutput(
                req.request_id, tokens, req.status.finish_reason, req.stop_reason,
                max(req.num_cached_tokens, 0), None if lp is None else lp if isinstance(lp, list) else [lp],
                prompt.pop(req.request_id, None),
            )
        )
    outs += [EngineCoreOutput(rid, [], new_prompt_logprobs=chunk) for rid, chunk in prompt.items()]
    return outs
