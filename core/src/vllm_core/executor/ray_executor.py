"""``RayExecutor`` (``distributed_executor_backend="ray"``): one Ray actor per rank, on any node of
a Ray cluster, running the same ``Worker`` as the ``mp`` executor's processes.

Start-up: ``ray.init()`` joins the cluster this machine belongs to (``ray start --head`` /
``ray start --address=HEAD:6379`` on each node; ``RAY_ADDRESS`` works too) or starts a local one;
a placement group reserves one bundle per rank (a GPU on accelerators, a CPU otherwise), packed
onto as few nodes as possible; rank 0's node hosts the ``torch.distributed`` rendezvous.

Each call is put into the object store once and handed to every actor; actors run calls in the
order they were sent, so a step's tokens come back in order. As with ``mp``, every rank samples
and the output rank's value is the step's. A dead actor, a failed call or a call past
``distributed_timeout_s`` is a ``WorkerError``; the actors are then killed.
"""

from __future__ import annotations

import logging
import time
from typing import Any, NoReturn

from torch import nn

from vllm_core.config import EngineConfig
from vllm_core.core.sched_output import ModelRunnerOutput, SchedulerOutput
from vllm_core.distributed.checks import check_parallel_sizes, load_hf_config
from vllm_core.distributed.parallel_state import output_rank
from vllm_core.engine.core_types import EngineCoreRequest
from vllm_core.errors import ConfigError, WorkerError
from vllm_core.executor.worker_group import WorkerGroupExecutor
from vllm_core.executor.worker_proc import DriverInfo, WorkerSpec, driver_info, start_worker
from vllm_core.model_executor.model_loader.loader import LoadedModel
from vllm_core.platforms.interface import Platform
from vllm_core.worker.model_runner import KVCacheSpec, PendingRunnerOutput

logger = logging.getLogger(__name__)

_PLACEMENT_TIMEOUT_S = 60.0
"""How long the cluster may take to find room for every rank."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            f"distributed_executor_backend='ray' needs Ray, which is not installed ({exc}); "
            "pip install ray, or use distributed_executor_backend='mp' on one node"
        ) from None
    return ray


class RayWorkerActor:
    """The body of a rank's actor: a ``Worker`` and a generic call."""

    def __init__(self) -> None:
        from vllm_core.worker.worker import Worker

        self.worker: Worker | None = None

    def node_ip_and_port(self) -> tuple[str, int]:
        """This actor's node address and a free port on it (rank 0 hosts the rendezvous)."""
        import ray

        from vllm_core.executor.multiproc import free_port

        return ray.util.get_node_ip_address(), free_port()

    def start(self, spec: WorkerSpec) -> DriverInfo:
        self.worker = start_worker(spec)
        return driver_info(self.worker)

    def call(self, method: str, args: tuple[Any, ...], reply: bool) -> Any:
        value = getattr(self.worker, method)(*args)
        return value if reply else None


class _RayPending(PendingRunnerOutput):
    def __init__(self, executor: RayExecutor, refs: list[Any]) -> None:
        super().__init__(0, [], None)
        self._executor, self._refs = executor, refs

    def get(self) -> ModelRunnerOutput:
        out: ModelRunnerOutput = self._executor._gather(self._refs)[self._executor.output_rank]
        return out


class RayExecutor(WorkerGroupExecutor):
    """One Ray actor per rank, placed by a placement group."""


    def __init__(self, config: EngineConfig, platform: Platform, use_tqdm: bool = False) -> None:
        super().__init__(config, platform, use_tqdm)
        ray = self.ray = import_ray()
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        par = config.parallel
        check_parallel_sizes(config, load_hf_config(config))  # before any actor starts
        self.world_size = par.world_size
        self.output_rank = output_rank(par.tensor_parallel_size, par.pipeline_parallel_size)
        self.timeout_s = par.distributed_timeout_s
        self._failed: str | None = None
        self._unchecked: list[tuple[int, Any]] = []
        """(rank, ref) of calls nobody waited for (``add_request``): their errors surface at the next wait."""
        self._init_ready_cache()
        self._started_ray = not ray.is_initialized()
        if self._started_ray:
            ray.init(ignore_reinit_error=True, log_to_driver=False)
        resource = "GPU" if platform.is_accelerator else "CPU"
        have = ray.cluster_resources().get(resource, 0)
        if have < self.world_size:
            self._shutdown_ray()
            raise ConfigError(
                f"{self.world_size} ranks need {self.world_size} {resource}s, but the Ray cluster has {have:g}; "
                "add nodes (ray start --address=HEAD:6379 on each) or lower the parallel sizes"
            )
        self.pg = placement_group([{resource: 1}] * self.world_size, strategy="PACK")
        self._remove_pg = remove_placement_group
        ready, _ = ray.wait([self.pg.ready()], timeout=_PLACEMENT_TIMEOUT_S)
        if not ready:
            self._shutdown_ray()
            raise ConfigError(f"the Ray cluster found no room for {self.world_size} bundles of one {resource} "
                              f"within {_PLACEMENT_TIMEOUT_S:.0f} s")
        actor_cls = ray.remote(RayWorkerActor)
        self.actors = [
            actor_cls.options(  # type: ignore[attr-defined]
                num_cpus=0 if platform.is_accelerator else 1, num_gpus=1 if platform.is_accelerator else 0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=rank),
            ).remote()
            for rank in range(self.world_size)
        ]
        ip, port = ray.get(self.actors[0].node_ip_and_port.remote(), timeout=_PLACEMENT_TIMEOUT_S)
        level = logging.getLogger("vllm_core").getEffectiveLevel()
        # Ray gives each actor its own device (CUDA_VISIBLE_DEVICES): device 0 of what it sees
        specs = [WorkerSpec(config, rank, 0, f"tcp://{ip}:{port}", None, level) for rank in range(self.world_size)]
        infos: list[DriverInfo] = self._gather(
            [a.start.remote(s) for a, s in zip(self.actors, specs)], timeout=None,
        )
        info = self.info = infos[self.output_rank]
        self.loaded = LoadedModel(
            nn.Module(), info.hf_config, info.tokenizer, info.dtype, info.max_model_len, info.model_path,
            info.load_seconds,
        )
        self._waits_for_requests = any(i.waits_for_requests for i in infos)
        logger.info("ray executor: %d actors (tp=%d, pp=%d), rendezvous %s:%d", self.world_size,
                    par.tensor_parallel_size, par.pipeline_parallel_size, ip, port)

    # ------------------------------------------------------------------ the channel
    def _send(self, method: str, args: tuple[Any, ...], reply_ranks: set[int]) -> list[Any]:
        if self._failed is not None:
            raise WorkerError(self._failed)
        ref = self.ray.put(args)
        return [a.call.remote(method, ref, rank in reply_ranks) for rank, a in enumerate(self.actors)]

    def _fail(self, message: str) -> NoReturn:
        if self._failed is None:
            self._failed = message
            logger.error("%s; killing all %d actors", message, self.world_size)
            self.shutdown()
        raise WorkerError(message)

    def _gather(self, refs: list[Any], timeout: float | None = -1.0) -> list[Any]:
        """Every rank's value of one call (``refs`` in rank order), raising any earlier
        unchecked call's error first."""
        ray = self.ray
        bound = self.timeout_s if timeout == -1.0 else timeout
        deadline = None if bound is None else time.monotonic() + bound
        rank_of = {ref: rank for rank, ref in self._unchecked + list(enumerate(refs))}
        self._unchecked = []
        pending = list(rank_of)
        while pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            done, pending = ray.wait(pending, num_returns=1, timeout=left)
            if not done:
                self._fail(f"Ray worker rank {rank_of[pending[0]]} did not answer within distributed_timeout_s="
                           f"{self.timeout_s}; raise it if a step may take that long")
            for ref in done:
                try:
                    ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - an actor died or its call raised
                    self._fail(f"Ray worker rank {rank_of[ref]} failed: {exc}")
        return [ray.get(r) for r in refs]

    def _call_all(self, method: str, *args: Any) -> list[Any]:
        return self._gather(self._send(method, args, set(range(self.world_size))))

    # --------------------------------------------------------------- Executor
    def initialize(self, max_num_batched_tokens: int, prepared_kv_bytes: int | None) -> KVCacheSpec:
        specs: list[KVCacheSpec] = self._call_all("determine_kv_cache", max_num_batched_tokens, None)
        smallest = min(specs, key=lambda s: s.num_blocks)
        self.kv_spec = smallest
        self._call_all("initialize_kv_cache", smallest, max_num_batched_tokens)
        return smallest

    def add_request(self, request: EngineCoreRequest) -> None:
        self._unchecked += list(enumerate(self._send("add_request", (request,), set())))

    def _launch_step(self, output: SchedulerOutput) -> PendingRunnerOutput:
        return _RayPending(self, self._send("execute_model", (output,), {self.output_rank}))

    def _shutdown_ray(self) -> None:
        if self._started_ray and self.ray.is_initialized():
            self.ray.shutdown()

    def shutdown(self) -> None:
        for a in getattr(self, "actors", []):
            try:
                self.ray.kill(a)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = []
        if getattr(self, "pg", None) is not None:
            try:
                self._remove_pg(self.pg)
            except Exception:  # noqa: BLE001
                pass
            self.pg = None
        self._shutdown_ray()
