"""The ``Executor`` interface between the engine core and the workers."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from vllm_core.config import EngineConfig
from vllm_core.core.sched_output import ModelRunnerOutput, SchedulerOutput
from vllm_core.engine.core_types import EngineCoreRequest
from vllm_core.model_executor.model_loader.loader import LoadedModel
from vllm_core.platforms.interface import Platform
from vllm_core.worker.model_runner import KVCacheSpec, PendingRunnerOutput


class Executor(ABC):
    """Runs each scheduled step on every worker and returns the driver worker's tokens.

    Construction loads the model on every worker; ``initialize`` sizes the KV cache by the
    *smallest* free memory over the workers and allocates it everywhere."""

    in_process: ClassVar[bool] = True
    """The driver worker runs in the engine core's process (its platform's prepared KV memory is
    the cache's); False when every rank is a process or actor of its own."""
    config: EngineConfig
    platform: Platform
    loaded: LoadedModel
    """The driver worker's model (tokenizer, HF config, max_model_len for the front end)."""
    kv_spec: KVCacheSpec

    def __init__(self, config: EngineConfig, platform: Platform, use_tqdm: bool = False) -> None:
        """Start the workers and load the model on each (``use_tqdm``: a progress bar)."""
        self.config = config
        self.platform = platform

    @abstractmethod
    def initialize(self, max_num_batched_tokens: int, prepared_kv_bytes: int | None) -> KVCacheSpec:
        """Size and allocate the KV cache on every worker; returns the common spec."""

    @abstractmethod
    def add_request(self, request: EngineCoreRequest) -> None:
        """A new request (runner extensions start preparing it)."""

    @abstractmethod
    def is_ready(self, req_id: str) -> bool:
        """May the scheduler start this waiting request now?"""

    @abstractmethod
    def execute_model(self, output: SchedulerOutput) -> ModelRunnerOutput:
        """Run one step and wait for its tokens."""

    @abstractmethod
    def execute_model_async(self, output: SchedulerOutput) -> PendingRunnerOutput:
        """Launch one step; ``get()`` on the result waits for its tokens."""

    @property
    @abstractmethod
    def supports_async_scheduling(self) -> bool:
        """False when a runner extension needs each step's tokens before the next is scheduled."""

    def allows_async_step(self, req_ids: Sequence[str]) -> bool:
        """When ``supports_async_scheduling`` is False: may the next step, over these requests,
        still run ahead of its results? (Speculative decoding: when it will draft nothing.)"""
        return False

    @property
    def steps_ahead(self) -> int:
        """Steps the engine keeps in flight under async scheduling (1: schedule step N+1 while
        step N runs; pipeline parallel executors: one per stage but the last)."""
        return 1

    @property
    def accepts_placeholders(self) -> bool:
        """May a step feed a token still being sampled as a placeholder (the runner takes it from
        device memory)? False with pipeline stages: such a request waits for its token."""
        return True

    def shutdown(self) -> None:
        """Stop the workers (nothing to do in process)."""
