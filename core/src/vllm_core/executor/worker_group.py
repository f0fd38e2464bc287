"""What the out-of-process executors (``mp``, ``ray``) share: the step protocol over a group of
worker ranks, whatever carries the calls (pipes or Ray actors)."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from vllm_core.core.sched_output import ModelRunnerOutput, SchedulerOutput
from vllm_core.executor.abstract import Executor
from vllm_core.worker.model_runner import PendingRunnerOutput


class WorkerGroupExecutor(Executor):
    """Workers in other processes, one per rank; only ``output_rank`` (tensor rank 0 of the last
    stage) answers a step. Subclasses set ``info`` (the driver rank's ``DriverInfo``) and
    ``_waits_for_requests`` once the workers are up, and implement ``_call_all`` / ``_launch_step``."""

    in_process: ClassVar[bool] = False
    info: Any
    _waits_for_requests: bool

    def _init_ready_cache(self) -> None:
        self._ready_cache: set[str] = set()
        """Requests every rank has answered ``is_ready`` for (asked again after they run)."""

    @abstractmethod
    def _call_all(self, method: str, *args: Any) -> list[Any]:
        """``method(*args)`` on every rank's worker; their answers, in rank order."""

    @abstractmethod
    def _launch_step(self, output: SchedulerOutput) -> PendingRunnerOutput:
        """Send the step to every rank; the pending answer of ``output_rank``."""

    def is_ready(self, req_id: str) -> bool:
        if not self._waits_for_requests or req_id in self._ready_cache:
            return True
        if all(self._call_all("is_ready", req_id)):
            self._ready_cache.add(req_id)
            return True
        return False

    def execute_model(self, output: SchedulerOutput) -> ModelRunnerOutput:
        return self.execute_model_async(output).get()

    def execute_model_async(self, output: SchedulerOutput) -> PendingRunnerOutput:
        self._ready_cache.difference_update(output.finished_req_ids)
        for r in output.scheduled:
            self._ready_cache.discard(r.req_id)
        return self._launch_step(output)

    @property
    def supports_async_scheduling(self) -> bool:
        return bool(self.info.supports_async_scheduling)

    def allows_async_step(self, req_ids: Sequence[str]) -> bool:
        # decided on the driver from the config (``allows_async_step_by_config``): asking the
        # workers would wait for the step they are running
        from vllm_core.plugins import registry

        extensions, names = registry.runner_extensions(), self.info.sync_extensions
        return bool(names) and all(
            extensions.get(name).allows_async_step_by_config(self.config, req_ids) for name in names
        )

    @property
    def steps_ahead(self) -> int:
        # pipeline stages: a step per stage in flight (stage 0 runs step N+1 while stage 1 runs N)
        return max(1, self.config.parallel.pipeline_parallel_size - 1)

    @property
    def accepts_placeholders(self) -> bool:
        # the first stage embeds real token ids: it never has the last stage's samples
        return self.config.parallel.pipeline_parallel_size == 1
