"""``Worker``: one process's share of the model — its platform, its model and its runner.

An executor owns one or more workers (one per device once tensor / pipeline parallelism land);
each sizes its KV cache from its own memory and runs the steps the executor hands it.
"""

from __future__ import annotations

import logging

from vllm_core.config import EngineConfig
from vllm_core.core.sched_output import ModelRunnerOutput, SchedulerOutput
from vllm_core.distributed.parallel_state import SINGLE, ParallelContext
from vllm_core.engine.core_types import EngineCoreRequest
from vllm_core.model_executor.model_loader.loader import LoadedModel, load_model
from vllm_core.platforms.interface import Platform
from vllm_core.worker.model_runner import KVCacheSpec, ModelRunner, PendingRunnerOutput, size_kv_cache

logger = logging.getLogger(__name__)


class Worker:
    """Loads the model on its platform and runs it through a ``ModelRunner``."""

    def __init__(
        self, config: EngineConfig, platform: Platform, rank: int = 0, use_tqdm: bool = False,
        parallel: ParallelContext = SINGLE,
    ) -> None:
        """``parallel``: this rank's groups (``distributed.init_distributed``); a world of one by default."""
        self.config = config
        self.platform = platform
        self.rank = rank
        self.parallel = parallel
        self.use_tqdm = use_tqdm
        self.loaded: LoadedModel | None = None
        self.runner: ModelRunner | None = None

    def load_model(self) -> LoadedModel:
        from vllm_core.plugins import registry

        self.loaded = load_model(self.config.model, self.platform, use_tqdm=self.use_tqdm, parallel=self.parallel)
        sampler = registry.samplers().get(self.platform.sampler_name())()
        self.runner = ModelRunner(self.loaded, self.platform, sampler, self.config.model.seed, self.config)
        self.runner.logprobs_mode = self.config.model.logprobs_mode
        return self.loaded

    def _runner(self) -> ModelRunner:
        if self.runner is None:
            raise RuntimeError("Worker.load_model() must run first")
        return self.runner

    def determine_kv_cache(self, max_num_batched_tokens: int, prepared_bytes: int | None) -> KVCacheSpec:
        """The KV cache this worker's memory holds (a profiling run on accelerators)."""
        runner = self._runner()
        assert self.loaded is not None
        cache = self.config.cache
        block_size = cache.block_size or self.platform.default_block_size
        return size_kv_cache(
            cache, self.loaded, self.platform,
            profile=lambda: runner.profile_run(max_num_batched_tokens, self.config.scheduler.max_num_seqs, block_size),
            prepared_bytes=prepared_bytes, extra_bytes_per_block=runner.extensions.kv_bytes_per_block,
        )

    def initialize_kv_cache(self, spec: KVCacheSpec, max_num_batched_tokens: int) -> None:
        """Allocate the cache, fix the step shapes the platform asks for, capture graphs."""
        runner = self._runner()
        assert self.loaded is not None
        runner.initialize_kv_cache(spec)
        sc = self.config.scheduler
        runner.set_step_shapes(sc.max_num_seqs, max_num_batched_tokens, self.loaded.max_model_len, spec.block_size)
        if self.parallel.pp_size > 1 or not self.parallel.tp.graph_safe:
            # a stage's forward sends and receives between processes, and host-side collectives
            # (gloo) are not recorded: no replayable graph
            logger.info("tensor / pipeline parallel on %s: graphs off, every step runs eagerly", self.platform.name)
        elif not self.config.model.enforce_eager:
            runner.capture_graphs(sc.max_num_seqs, self.loaded.max_model_len)
        if runner.step_shapes is not None:
            self.platform.warm_up(
                runner.execute, runner.step_shapes, self.loaded.max_model_len, spec.block_size, spec.num_blocks
            )

    def add_request(self, request: EngineCoreRequest) -> None:
        self._runner().extensions.add_request(request.request_id, request.sampling_params, request.extensions)

    def is_ready(self, req_id: str) -> bool:
        return self._runner().extensions.is_ready(req_id)

    def supports_async_scheduling(self) -> bool:
        """False when a runner extension needs each step's tokens before the next is scheduled."""
        return self._runner().extensions.supports_async_scheduling

    def sync_extensions(self) -> tuple[str, ...]:
        """Names of the runner extensions that need each step's tokens before the next."""
        return self._runner().extensions.sync_names

    def waits_for_requests(self) -> bool:
        """Whether any runner extension may hold a request back (``is_ready``): when none does,
        a remote executor answers ``is_ready`` without asking the workers."""
        from vllm_core.extensions.runner import RunnerExtension

        return any(type(e).is_ready is not RunnerExtension.is_ready for e in self._runner().extensions.items)

    def execute_model(self, output: SchedulerOutput) -> ModelRunnerOutput:
        return self._runner().execute(output)

    def execute_model_async(self, output: SchedulerOutput) -> PendingRunnerOutput:
        return self._runner().execute_async(output)
