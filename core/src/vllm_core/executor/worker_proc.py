"""One rank of a multi-process engine: start-up (shared by the ``mp`` and ``ray`` executors) and
the ``mp`` worker process's control loop.

A rank binds its share of the host's cores (CPU platforms), picks its device (``LOCAL_RANK``),
resolves and sets up the platform, joins the world (``distributed.init_distributed``), loads its
shard of the model and then runs the ``Worker`` methods the driver sends, in order.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from vllm_core.config import EngineConfig
from vllm_core.distributed.parallel_state import destroy_distributed, init_distributed
from vllm_core.worker.worker import Worker

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    """What a rank needs to start (picklable: it crosses the process boundary)."""

    config: EngineConfig
    rank: int
    local_rank: int
    init_method: str
    """``torch.distributed`` rendezvous, ``tcp://host:port`` of rank 0."""
    cpus: tuple[int, ...] | None = None
    """Cores this rank may run on (CPU platforms share the host's cores out); None: all."""
    log_level: int = logging.WARNING


@dataclass(frozen=True)
class DriverInfo:
    """What the driver needs of the loaded model (``LoadedModel`` without the module)."""

    hf_config: Any
    tokenizer: Any | None
    dtype: Any
    max_model_len: int
    model_path: str
    load_seconds: float
    supports_async_scheduling: bool
    waits_for_requests: bool
    sync_extensions: tuple[str, ...] = ()
    """Runner extensions that need each step's tokens (``RunnerExtensions.sync_names``)."""


def start_worker(spec: WorkerSpec) -> Worker:
    """Bind cores, pick the device, join the world, load this rank's shard."""
    from vllm_core.platforms import resolve_platform

    if spec.cpus is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, spec.cpus)  # before the platform sizes its thread pool
    os.environ["LOCAL_RANK"] = str(spec.local_rank)
    par = spec.config.parallel
    platform = resolve_platform(spec.config.device.device)
    platform.setup()
    parallel = init_distributed(
        platform, spec.rank, par.tensor_parallel_size, par.pipeline_parallel_size, spec.init_method,
        par.distributed_timeout_s,
    )
    worker = Worker(spec.config, platform, rank=spec.rank, parallel=parallel)
    worker.load_model()
    return worker


def driver_info(worker: Worker) -> DriverInfo:
    loaded = worker.loaded
    assert loaded is not None
    return DriverInfo(
        loaded.hf_config, loaded.tokenizer, loaded.dtype, loaded.max_model_len, loaded.model_path,
        loaded.load_seconds, worker.supports_async_scheduling(), worker.waits_for_requests(),
        worker.sync_extensions(),
    )


_PARENT_POLL_S = 0.5


def die_with_parent(parent_pid: int) -> None:
    """Exit as soon as the driver process is gone, however it went (a thread polls the parent
    pid; it runs while the main thread waits in a collective, which releases the GIL), so no
    worker outlives the engine. (``PR_SET_PDEATHSIG`` would fire when the *thread* that started
    the worker ends, which may be long before the driver does.)"""

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(1)
            time.sleep(_PARENT_POLL_S)

    threading.Thread(target=watch, name="vllm-core-parent-watch", daemon=True).start()


def worker_main(spec: WorkerSpec, conn: Any, parent_pid: int) -> None:
    """Body of an ``mp`` worker process.

    Messages from the driver: a reply flag byte, then pickled ``(seq, method, args)``; ``method``
    is a ``Worker`` method or ``"shutdown"``. Replies: ``("ok", seq, value)`` when ``reply`` is set;
    ``("error", seq, traceback)`` for any failure, after which the worker exits.
    """
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides when to stop
    logging.basicConfig(level=spec.log_level, format=f"%(asctime)s %(levelname)s rank{spec.rank} %(name)s: %(message)s")
    try:
        worker = start_worker(spec)
        conn.send(("ready", -1, driver_info(worker)))
    except BaseException:  # noqa: BLE001 - reported to the driver, which raises it
        conn.send(("error", -1, traceback.format_exc()))
        return
    try:
        while True:
            try:
                data = conn.recv_bytes()
                reply = data[0] == 1
                seq, method, args = pickle.loads(memoryview(data)[1:])
            except EOFError:  # the driver is gone
                return
            if method == "shutdown":
                return
            try:
                value = getattr(worker, method)(*args)
            except BaseException:  # noqa: BLE001
                conn.send(("error", seq, traceback.format_exc()))
                return
            if reply:
                conn.send(("ok", seq, value))
    finally:
        destroy_distributed()
