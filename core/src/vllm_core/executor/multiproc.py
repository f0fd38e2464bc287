"""``MultiprocExecutor`` (``distributed_executor_backend="mp"``): one spawned process per rank on
this node, as vLLM's.

The driver (the engine core's process) holds no model: it pickles each call once and writes it
to every worker's pipe; every rank runs the step (its shard, its stage) and samples the same
tokens from the same gathered logits, and only the output rank (tensor rank 0 of the last
stage) replies. Sampling on every rank, rather than on one rank and broadcasting, keeps each
rank's runner state (async-scheduling placeholders, structured-output grammars, proposers)
identical without a broadcast per step; TP ranks get bit-identical logits from the all-gather.

Faults: the driver waits on the output rank's pipe *and* on every worker's pipe and process
sentinel, with ``distributed_timeout_s`` as the bound; a worker that raises, exits or stays
silent past the bound is a ``WorkerError`` naming the rank, and every worker is killed (the
survivors would wait in a collective otherwise). Workers exit when the driver process is gone
(a watcher thread) and on EOF of their pipe, so none is left behind.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import pickle
import socket
import time
import weakref
from multiprocessing.connection import wait
from typing import Any, NoReturn

from torch import nn

from vllm_core.config import EngineConfig
from vllm_core.core.sched_output import ModelRunnerOutput, SchedulerOutput
from vllm_core.distributed.checks import check_parallel_sizes, load_hf_config
from vllm_core.distributed.parallel_state import output_rank
from vllm_core.engine.core_types import EngineCoreRequest
from vllm_core.errors import WorkerError
from vllm_core.executor.worker_group import WorkerGroupExecutor
from vllm_core.executor.worker_proc import DriverInfo, WorkerSpec, worker_main
from vllm_core.model_executor.model_loader.loader import LoadedModel
from vllm_core.platforms.interface import Platform
from vllm_core.worker.model_runner import KVCacheSpec, PendingRunnerOutput

logger = logging.getLogger(__name__)

_STOP_GRACE_S = 5.0
"""How long a worker may take to exit after ``shutdown`` before it is killed."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def split_cpus(num_ranks: int) -> list[tuple[int, ...] | None]:
    """Each rank's share of this process's cores (contiguous, as even as possible); None for
    every rank when there are fewer cores than ranks (they share them all)."""
    try:
        cores = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return [None] * num_ranks
    if len(cores) < num_ranks:
        return [None] * num_ranks
    return [tuple(cores[r * len(cores) // num_ranks:(r + 1) * len(cores) // num_ranks]) for r in range(num_ranks)]


def _stop(procs: list[Any], conns: list[Any], grace_s: float = _STOP_GRACE_S) -> None:
    """Ask every worker to exit, then kill the ones still running after ``grace_s``."""
    msg = b"\x00" + pickle.dumps((-1, "shutdown", ()))
    for c in conns:
        try:
            c.send_bytes(msg)
        except OSError:
            pass
    deadline = time.monotonic() + grace_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(1.0)
    for c in conns:
        c.close()


class _RemotePending(PendingRunnerOutput):
    """A step sent to the workers; ``get()`` waits for the output rank's reply."""

    def __init__(self, executor: MultiprocExecutor, seq: int) -> None:
        super().__init__(0, [], None)
        self._executor, self._seq = executor, seq

    def get(self) -> ModelRunnerOutput:
        out: ModelRunnerOutput = self._executor._wait(self._seq)
        return out


class MultiprocExecutor(WorkerGroupExecutor):
    """One worker process per rank (spawned), driven over pipes."""


    def __init__(self, config: EngineConfig, platform: Platform, use_tqdm: bool = False) -> None:
        super().__init__(config, platform, use_tqdm)
        par = config.parallel
        check_parallel_sizes(config, load_hf_config(config))  # before any process starts
        self.world_size = par.world_size
        self.output_rank = output_rank(par.tensor_parallel_size, par.pipeline_parallel_size)
        self.timeout_s = par.distributed_timeout_s
        self._seq = 0
        self._replies: dict[int, Any] = {}
        self._failed: str | None = None
        self._init_ready_cache()
        ctx = mp.get_context("spawn")
        me = mp.current_process()
        if me.daemon:
            # The engine core runs in a daemonic process; its workers exit with it (they watch
            # the parent pid and their pipe), which is what the daemon rule protects against.
            me.daemon = False
        init_method = f"tcp://127.0.0.1:{free_port()}"
        cpus = [None] * self.world_size if platform.is_accelerator else split_cpus(self.world_size)
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        level = logging.getLogger("vllm_core").getEffectiveLevel()
        for rank in range(self.world_size):
            spec = WorkerSpec(config, rank, rank, init_method, cpus[rank], level)
            parent_conn, child_conn = ctx.Pipe()
            proc = ctx.Process(
                target=worker_main, args=(spec, child_conn, os.getpid()), name=f"vllm-core-worker-{rank}", daemon=True,
            )
            proc.start()
            child_conn.close()
            self.procs.append(proc)
            self.conns.append(parent_conn)
        self._finalizer = weakref.finalize(self, _stop, self.procs, self.conns)
        logger.info(
            "mp executor: %d workers (tp=%d, pp=%d), pids %s", self.world_size, par.tensor_parallel_size,
            par.pipeline_parallel_size, [p.pid for p in self.procs],
        )
        infos = [self._wait(-1, rank, timeout=None) for rank in range(self.world_size)]
        info: DriverInfo = infos[self.output_rank]
        self.info = info
        self.loaded = LoadedModel(
            nn.Module(), info.hf_config, info.tokenizer, info.dtype, info.max_model_len, info.model_path,
            info.load_seconds,
        )
        self._waits_for_requests = any(i.waits_for_requests for i in infos)

    # ------------------------------------------------------------------ the channel
    def _send(self, method: str, args: tuple[Any, ...], reply_ranks: set[int]) -> int:
        if self._failed is not None:
            raise WorkerError(self._failed)
        self._seq += 1
        payload = pickle.dumps((self._seq, method, args))  # once, whatever the world size
        for rank, conn in enumerate(self.conns):
            try:
                conn.send_bytes(b"\x01" + payload if rank in reply_ranks else b"\x00" + payload)
            except OSError as exc:
                self._fail(f"cannot reach worker rank {rank} (pid {self.procs[rank].pid}): {exc}")
        return self._seq

    def _fail(self, message: str) -> NoReturn:
        """Record the failure, stop every worker, raise."""
        if self._failed is None:
            self._failed = message
            logger.error("%s; stopping all %d workers", message, self.world_size)
            self._finalizer.detach()
            _stop(self.procs, self.conns, grace_s=0.0)  # the survivors may sit in a collective
        raise WorkerError(message)

    def _wait(self, seq: int, rank: int | None = None, timeout: float | None = -1.0) -> Any:
        """The reply to call ``seq`` from ``rank`` (default: the output rank), watching every
        worker meanwhile; ``timeout`` -1: ``distributed_timeout_s``, None: no bound."""
        rank = self.output_rank if rank is None else rank
        key = seq * self.world_size + rank
        if key in self._replies:
            return self._replies.pop(key)
        if self._failed is not None:
            raise WorkerError(self._failed)
        bound = self.timeout_s if timeout == -1.0 else timeout
        deadline = None if bound is None else time.monotonic() + bound
        sentinels = {p.sentinel: r for r, p in enumerate(self.procs)}
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = wait(self.conns + list(sentinels), timeout=left)
            if not ready:
                self._fail(
                    f"worker rank {rank} (pid {self.procs[rank].pid}) did not answer within "
                    f"distributed_timeout_s={self.timeout_s}; raise it if a step may take that long"
                )
            for r, conn in enumerate(self.conns):  # messages before deaths: a failing rank says why
                if conn not in ready:
                    continue
                try:
                    kind, got_seq, value = conn.recv()
                except (EOFError, OSError):
                    self._fail(self._death(r))
                if kind == "error":
                    self._fail(f"worker rank {r} (pid {self.procs[r].pid}) failed:\n{value}")
                got = got_seq * self.world_size + r if got_seq >= 0 else -self.world_size + r
                if got == key:
                    return value
                self._replies[got] = value
            for s in ready:
                if s in sentinels:
                    self._fail(self._death(sentinels[s]))

    def _death(self, rank: int) -> str:
        proc = self.procs[rank]
        proc.join(0.5)
        return (
            f"worker rank {rank} (pid {proc.pid}) exited unexpectedly with code {proc.exitcode} "
            "(killed, out of memory, or crashed in native code)"
        )

    def _call_all(self, method: str, *args: Any) -> list[Any]:
        seq = self._send(method, args, set(range(self.world_size)))
        return [self._wait(seq, r) for r in range(self.world_size)]

    # --------------------------------------------------------------- Executor
    def initialize(self, max_num_batched_tokens: int, prepared_kv_bytes: int | None) -> KVCacheSpec:
        specs: list[KVCacheSpec] = self._call_all("determine_kv_cache", max_num_batched_tokens, None)
        smallest = min(specs, key=lambda s: s.num_blocks)
        logger.info("KV blocks per rank %s: every rank allocates %d", [s.num_blocks for s in specs], smallest.num_blocks)
        self.kv_spec = smallest
        self._call_all("initialize_kv_cache", smallest, max_num_batched_tokens)
        return smallest

    def add_request(self, request: EngineCoreRequest) -> None:
        self._send("add_request", (request,), set())

    def _launch_step(self, output: SchedulerOutput) -> PendingRunnerOutput:
        return _RemotePending(self, self._send("execute_model", (output,), {self.output_rank}))

    def shutdown(self) -> None:
        self._finalizer()
