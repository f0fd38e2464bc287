"""Executors: the one place that knows how many processes run the model.

``EngineCore`` talks to an ``Executor``; the executor owns the workers and each worker owns a
``ModelRunner``. ``UniProcExecutor`` (one worker, in process) runs a world of one;
``MultiprocExecutor`` (``mp``) one spawned process per rank on this node; ``RayExecutor``
(``ray``) one Ray actor per rank, on any node of a Ray cluster. All run the same ``Worker``.
"""

from __future__ import annotations

import sys

from vllm_core.config import EngineConfig
from vllm_core.errors import ConfigError
from vllm_core.executor.abstract import Executor
from vllm_core.executor.uniproc import UniProcExecutor
from vllm_core.platforms.interface import Platform


def ray_initialized() -> bool:
    """A Ray cluster is already initialised in this process (``ray.init`` ran)."""
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def resolve_backend(config: EngineConfig, platform: Platform) -> str:
    """The executor backend for ``config.parallel`` (vLLM's rule when it is left unset): ``uni``
    for a world of one; ``ray`` when a Ray cluster is initialised or the world is larger than this
    node's devices; ``mp`` otherwise. A world larger than the node's devices under ``mp`` is a
    ``ConfigError`` before any process starts."""
    par = config.parallel
    backend = par.distributed_executor_backend
    devices = platform.device_count()
    if backend is None:
        if par.world_size == 1:
            backend = "uni"
        elif ray_initialized() or (devices is not None and par.world_size > devices):
            backend = "ray"
        else:
            backend = "mp"
    if backend == "mp" and devices is not None and par.world_size > devices:
        raise ConfigError(
            f"tensor_parallel_size={par.tensor_parallel_size} x pipeline_parallel_size="
            f"{par.pipeline_parallel_size} = {par.world_size} ranks, but this node has {devices} "
            f"{platform.name} devices; lower the sizes, or use distributed_executor_backend='ray' across nodes"
        )
    return backend


def executor_class(config: EngineConfig, platform: Platform) -> type[Executor]:
    """The executor class for ``config.parallel`` on ``platform``."""
    backend = resolve_backend(config, platform)
    if backend == "mp":
        from vllm_core.executor.multiproc import MultiprocExecutor

        return MultiprocExecutor
    if backend == "ray":
        from vllm_core.executor.ray_executor import RayExecutor

        return RayExecutor
    return UniProcExecutor


__all__ = ["Executor", "UniProcExecutor", "executor_class", "ray_initialized", "resolve_backend"]
