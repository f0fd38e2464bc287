"""``UniProcExecutor``: one worker in the engine core's own process (a world of one)."""

from __future__ import annotations

from collections.abc import Sequence

from vllm_core.config import EngineConfig
from vllm_core.core.sched_output import ModelRunnerOutput, SchedulerOutput
from vllm_core.engine.core_types import EngineCoreRequest
from vllm_core.executor.abstract import Executor
from vllm_core.platforms.interface import Platform
from vllm_core.worker.model_runner import KVCacheSpec, ModelRunner, PendingRunnerOutput
from vllm_core.worker.worker import Worker


class UniProcExecutor(Executor):
    """The driver worker is the only worker; calls go straight to it."""

    def __init__(self, config: EngineConfig, platform: Platform, use_tqdm: bool = False) -> None:
        super().__init__(config, platform, use_tqdm)
        self.worker = Worker(config, platform, rank=0, use_tqdm=use_tqdm)
        self.loaded = self.worker.load_model()

    @property
    def runner(self) -> ModelRunner:
        """The driver worker's model runner."""
        assert self.worker.runner is not None
        return self.worker.runner

    def initialize(self, max_num_batched_tokens: int, prepared_kv_bytes: int | None) -> KVCacheSpec:
        self.kv_spec = self.worker.determine_kv_cache(max_num_batched_tokens, prepared_kv_bytes)
        self.worker.initialize_kv_cache(self.kv_spec, max_num_batched_tokens)
        return self.kv_spec

    def add_request(self, request: EngineCoreRequest) -> None:
        self.worker.add_request(request)

    def is_ready(self, req_id: str) -> bool:
        return self.worker.is_ready(req_id)

    def execute_model(self, output: SchedulerOutput) -> ModelRunnerOutput:
        return self.worker.execute_model(output)

    def execute_model_async(self, output: SchedulerOutput) -> PendingRunnerOutput:
        return self.worker.execute_model_async(output)

    @property
    def supports_async_scheduling(self) -> bool:
        return self.runner.extensions.supports_async_scheduling

    def allows_async_step(self, req_ids: Sequence[str]) -> bool:
        return self.runner.extensions.allows_async_step(req_ids)
