"""Executors: the one place that knows how many processes run the model.

``EngineCore`` talks to an ``Executor``; the executor owns the workers and each worker owns a
``ModelRunner``. ``UniProcExecutor`` (one worker, in process) is the executor of a world of
one; the multiprocess and Ray executors of tensor / pipeline parallelism implement the same
interface.
"""

from __future__ import annotations

from vllm_core.config import EngineConfig
from vllm_core.executor.abstract import Executor
from vllm_core.executor.uniproc import UniProcExecutor


def executor_class(config: EngineConfig) -> type[Executor]:
    """The executor for ``config.parallel`` (a world of one: in process)."""
    # ParallelConfig refuses world sizes above 1 and the mp / ray backends until they land.
    return UniProcExecutor


__all__ = ["Executor", "UniProcExecutor", "executor_class"]
