"""The engine core in its own process, and the client the front end talks to it through.

As in vLLM v1, the front end (HTTP parsing, tokenizing, detokenizing) and the core (scheduling,
running the model) live in different processes, so Python work on one side never stalls the
other. Two ``multiprocessing`` queues (spawn context) connect them::

    front end                                 core process
    CoreClient.add_request / abort / call --> in_q  -> drained before every step
    reader thread <-- out_q <-- ("outputs", [EngineCoreOutput], [tokens per step]) after a step with outputs
                               ("result", call_id, value | exception)
                               ("dead", message) when a step raised

The core blocks on ``in_q`` while it has nothing to run, and exits when the parent is gone.

Engine death is never a hang: the front end closes its own copy of ``out_q``'s write end once the
core has started, so when the core dies the reader gets EOF (never blocks on a half-written
message); a watcher thread waits on the process sentinel and reports the death itself if the reader
has not within ``_DEAD_GRACE_S``. Either way ``on_message`` gets one ``("dead", reason)``, which
fails every open request, and every later request raises ``EngineDeadError``.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import multiprocessing as mp
import operator
import os
import queue
import signal
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait as _wait_ready
from typing import Any

from vllm_core.config import EngineConfig
from vllm_core.core.step_constraint import InfoGauge
from vllm_core.engine.core_types import EngineCoreOutput, EngineCoreRequest
from vllm_core.errors import EngineError
from vllm_core.spec_decode.metrics import SpecDecodeStats

logger = logging.getLogger(__name__)

_POLL_S = 0.5
"""How often an idle side checks that the other process is still alive."""

_DEAD_GRACE_S = 1.0
"""After the core process exits, how long the reader may take to report it (with the core's own
traceback when it sent one) before the watcher reports it."""


_OUTPUT_FIELDS = tuple(f.name for f in dataclasses.fields(EngineCoreOutput))
_output_row = operator.attrgetter(*_OUTPUT_FIELDS)


def outputs_to_wire(outputs: list[EngineCoreOutput]) -> list[tuple[Any, ...]]:
    """One step's outputs as plain tuples (field order): pickling them costs about half of
    pickling the dataclasses, on both sides of the queue (the core's step loop and the front end)."""
    return [_output_row(o) for o in outputs]


def outputs_from_wire(rows: list[tuple[Any, ...]]) -> list[EngineCoreOutput]:
    return [EngineCoreOutput(*row) for row in rows]


class EngineDeadError(EngineError):
    """The engine-core process has died; the server must be restarted."""


@dataclass(frozen=True)
class EngineInfo:
    """What the core process found while loading, sent back once it is ready."""

    tokenizer: Any | None
    hf_config: Any
    max_model_len: int
    vocab_size: int
    eos_token_id: int | None
    model_path: str
    dtype: str
    platform: str
    num_kv_blocks: int
    block_size: int
    max_num_seqs: int


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the core's scheduler and KV cache."""

    num_running: int
    num_waiting: int
    num_kv_blocks: int
    num_free_kv_blocks: int
    kv_cache_usage: float
    """Fraction of KV blocks held by requests (cached free blocks count as free)."""
    prefix_cache_queries: int
    """Prompt tokens looked up in the prefix cache."""
    prefix_cache_hits: int
    num_preemptions: int
    spec_decode: SpecDecodeStats | None = None
    """Speculative decoding's cumulative counters (None: speculation is off)."""
    info_gauges: tuple[InfoGauge, ...] = ()
    """What the scheduler's step constraints report about the queues (``StepConstraint.info_gauges``)."""


def _stats(core: Any) -> EngineStats:
    sched, kv = core.scheduler, core.kv_cache_manager
    return EngineStats(
        num_running=sched.num_running,
        num_waiting=sched.num_waiting,
        num_kv_blocks=kv.pool.num_blocks,
        num_free_kv_blocks=kv.pool.num_free_blocks,
        kv_cache_usage=kv.usage,
        prefix_cache_queries=kv.prefix_queries,
        prefix_cache_hits=kv.prefix_hits,
        num_preemptions=sched.num_preemptions,
        spec_decode=_spec_decode_stats(core),
        info_gauges=_info_gauges(sched),
    )


def _info_gauges(sched: Any) -> tuple[InfoGauge, ...]:
    constraints = getattr(sched, "constraints", ())
    if not constraints:
        return ()
    running = [r.extensions for r in sched.running]
    waiting = [r.extensions for r in sched.waiting]
    return tuple(g for c in constraints for g in c.info_gauges(running, waiting))


def _spec_decode_stats(core: Any) -> SpecDecodeStats | None:
    counters = core.spec_decode_counters  # counted by the engine core: the runners may be other processes
    return None if counters is None else counters.snapshot()


def _load(config: EngineConfig) -> tuple[Any, EngineInfo]:
    from vllm_core.engine.engine_core import start_engine_core
    from vllm_core.engine.llm_engine import eos_token_id_of

    platform, loaded, core = start_engine_core(config)
    limit_host_threads(platform.device_type)
    info = EngineInfo(
        tokenizer=loaded.tokenizer,
        hf_config=loaded.hf_config,
        max_model_len=loaded.max_model_len,
        vocab_size=loaded.text_config.vocab_size,
        eos_token_id=eos_token_id_of(loaded.tokenizer, loaded.hf_config),
        model_path=loaded.model_path,
        dtype=str(loaded.dtype).removeprefix("torch."),
        platform=platform.name,
        num_kv_blocks=core.kv_spec.num_blocks,
        block_size=core.kv_spec.block_size,
        max_num_seqs=config.scheduler.max_num_seqs,
    )
    return core, info


HOST_THREADS_ON_ACCELERATORS = 1
"""torch's CPU threads in the engine-core process of an accelerator platform (vLLM's default for its
workers): the host only schedules and launches, and a CPU thread pool as wide as the machine
contends with the API process and the clients beside it (one descheduled pool thread stalls every
parallel region of the step)."""


def limit_host_threads(device_type: str) -> None:
    """In the engine-core process of an accelerator platform, keep torch to
    ``HOST_THREADS_ON_ACCELERATORS`` CPU threads unless ``OMP_NUM_THREADS`` says otherwise. Host
    platforms (cpu) size their own thread pools."""
    import torch

    if device_type == "cpu" or "OMP_NUM_THREADS" in os.environ:
        return
    threads = torch.get_num_threads()
    if threads > HOST_THREADS_ON_ACCELERATORS:
        logger.info("engine core: torch CPU threads %d -> %d (the host only launches work; set OMP_NUM_THREADS "
                    "to choose)", threads, HOST_THREADS_ON_ACCELERATORS)
        torch.set_num_threads(HOST_THREADS_ON_ACCELERATORS)


def run_engine_core(config: EngineConfig, in_q: Any, out_q: Any, log_level: int) -> None:
    """Body of the core process: load, report ready, then step while there is work."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the front end decides when to stop
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parent = os.getppid()
    try:
        core, info = _load(config)
    except Exception as exc:  # noqa: BLE001 - any load failure goes back to the front end
        out_q.put(("failed", _picklable(exc)))
        return
    out_q.put(("ready", info))
    core.step_num_tokens = []
    try:
        while True:
            idle = not core.has_unfinished_requests()
            try:
                msgs = [in_q.get(timeout=_POLL_S)] if idle else []
            except queue.Empty:
                if os.getppid() != parent:
                    return
                continue
            while True:
                try:
                    msgs.append(in_q.get_nowait())
                except queue.Empty:
                    break
            for msg in msgs:
                if msg[0] == "shutdown":
                    return
                _handle(core, msg, out_q)
            if core.has_unfinished_requests():
                outputs = core.step()
                if outputs:
                    out_q.put(("outputs", outputs_to_wire(outputs), core.step_num_tokens))
                    core.step_num_tokens = []
    except Exception:  # noqa: BLE001 - report, then die: the front end turns unhealthy
        out_q.put(("dead", traceback.format_exc()))
        raise


def _handle(core: Any, msg: tuple[Any, ...], out_q: Any) -> None:
    kind = msg[0]
    if kind == "add":
        core.add_request(msg[1])
    elif kind == "abort":
        core.abort_requests(msg[1])
    elif kind == "call":
        _, call_id, method = msg
        try:
            value: Any = _stats(core) if method == "stats" else getattr(core, method)()
        except Exception as exc:  # noqa: BLE001 - the caller gets the error
            value = _picklable(exc)
        out_q.put(("result", call_id, value))
    else:
        raise EngineError(f"unknown engine-core message {kind!r}")


def _picklable(exc: BaseException) -> BaseException:
    import pickle

    try:
        pickle.dumps(exc)
        return exc
    except Exception:  # noqa: BLE001
        return EngineError(f"{type(exc).__name__}: {exc}")


class CoreClient:
    """Front-end handle of the core process: send requests, receive outputs on a thread.

    ``on_message`` is called from the reader thread with every message from the core; the
    caller hands it to its own event loop. ``start()`` blocks until the model is loaded.
    """

    def __init__(self, config: EngineConfig, on_message: Callable[[tuple[Any, ...]], None]) -> None:
        ctx = mp.get_context("spawn")
        self.in_q: Any = ctx.Queue()
        self.out_q: Any = ctx.Queue()
        self.on_message = on_message
        self.proc = ctx.Process(
            target=run_engine_core,
            args=(config, self.in_q, self.out_q, logging.getLogger().getEffectiveLevel()),
            name="vllm-core-engine",
            daemon=True,
        )
        self._call_ids = itertools.count()
        self._reader: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._closing = False
        self._dead_lock = threading.Lock()
        self.dead_reason: str | None = None

    def start(self, timeout: float | None = None) -> EngineInfo:
        self.proc.start()
        # The child holds its own copy of out_q's write end now. Dropping ours means the pipe
        # reports EOF once the child is gone, instead of leaving a reader blocked forever on a
        # message the child was killed in the middle of writing. The front end never puts on out_q.
        _close_write_end(self.out_q)
        while True:
            try:
                msg = self.out_q.get(timeout=_POLL_S)
                break
            except (EOFError, OSError):
                self.proc.join(5)
                raise EngineDeadError(
                    f"the engine-core process exited with code {self.proc.exitcode} while loading"
                ) from None
            except queue.Empty:
                if not self.proc.is_alive():
                    raise EngineDeadError(
                        f"the engine-core process exited with code {self.proc.exitcode} while loading"
                    ) from None
                if timeout is not None:
                    timeout -= _POLL_S
                    if timeout <= 0:
                        self.proc.kill()
                        raise EngineDeadError("the engine-core process did not become ready in time") from None
        if msg[0] == "failed":
            self.proc.join(5)
            raise msg[1]
        self._reader = threading.Thread(target=self._read, name="vllm-core-engine-reader", daemon=True)
        self._reader.start()
        self._watcher = threading.Thread(target=self._watch, name="vllm-core-engine-watcher", daemon=True)
        self._watcher.start()
        info: EngineInfo = msg[1]
        return info

    @property
    def is_alive(self) -> bool:
        return self.dead_reason is None and self.proc.is_alive()

    def _exited(self, timeout: float = 0.0) -> bool:
        """Whether the core process has exited (waits up to ``timeout``); never reaps it."""
        return bool(_wait_ready([self.proc.sentinel], timeout))

    def _exit_reason(self) -> str:
        return f"the engine-core process died (exit code {self.proc.exitcode})"

    def _mark_dead(self, reason: str) -> None:
        """Record the death once and tell the front end with one ``("dead", reason)``."""
        with self._dead_lock:
            if self.dead_reason is not None:
                return
            self.dead_reason = reason
        self._deliver(("dead", reason))

    def _deliver(self, msg: tuple[Any, ...]) -> None:
        try:
            self.on_message(msg)
        except Exception:  # noqa: BLE001 - the reader must outlive a bug in the handler
            logger.exception("handling engine-core message %r failed", msg[0])

    def _read(self) -> None:
        while self.dead_reason is None:
            try:
                msg = self.out_q.get(timeout=_POLL_S)
            except queue.Empty:
                if self._closing:
                    return
                if self._exited():
                    self._mark_dead(self._exit_reason())
                    return
                continue
            except (EOFError, OSError, ValueError) as exc:
                # EOF: no process holds the write end any more, so the core is gone (or going).
                # OSError / ValueError: the queue broke or was closed under us. No output can come.
                if self._closing:
                    return
                if self._exited(_DEAD_GRACE_S):
                    self._mark_dead(self._exit_reason())
                else:
                    self._mark_dead(f"the engine-core output queue failed ({type(exc).__name__}: {exc})")
                return
            except Exception as exc:  # noqa: BLE001 - a lost message would leave its requests hanging
                if self._closing:
                    return
                self._mark_dead(f"a message from the engine core could not be read ({type(exc).__name__}: {exc})")
                return
            if msg[0] == "dead":
                self._mark_dead(f"the engine core failed:\n{msg[1]}")
                return
            if msg[0] == "outputs":  # rebuilt here, on the reader thread, not in the event loop
                msg = ("outputs", outputs_from_wire(msg[1]), *msg[2:])
            self._deliver(msg)

    def _watch(self) -> None:
        """Report the core's exit even while the reader is busy with a backlog or stuck."""
        _wait_ready([self.proc.sentinel])
        if self._closing:
            return
        if self._reader is not None:
            self._reader.join(_DEAD_GRACE_S)  # the reader may still bring the core's traceback
        if not self._closing:
            self._mark_dead(self._exit_reason())

    def _send(self, msg: tuple[Any, ...]) -> None:
        if not self.is_alive:
            raise EngineDeadError(self.dead_reason or "the engine-core process is not running")
        self.in_q.put(msg)

    def add_request(self, req: EngineCoreRequest) -> None:
        self._send(("add", req))

    def abort_requests(self, request_ids: list[str]) -> None:
        if request_ids and self.is_alive:
            self.in_q.put(("abort", request_ids))

    def call(self, method: str) -> int:
        """Ask the core for ``stats`` (or another no-argument method); the answer comes back as
        ``("result", call_id, value)``. Returns the call id."""
        call_id = next(self._call_ids)
        self._send(("call", call_id, method))
        return call_id

    def shutdown(self, timeout: float = 5.0) -> None:
        self._closing = True
        if self.proc.is_alive():
            try:
                self.in_q.put(("shutdown",))
            except (OSError, ValueError):
                pass
            self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout)
        for thread in (self._reader, self._watcher):
            if thread is not None:
                thread.join(timeout)
        for q in (self.in_q, self.out_q):
            q.cancel_join_thread()
            q.close()


def _close_write_end(q: Any) -> None:
    """Close this process's copy of a ``multiprocessing`` queue's write end (it only reads)."""
    writer = getattr(q, "_writer", None)
    if writer is not None:
        try:
            writer.close()
        except OSError:
            pass


__all__ = ["CoreClient", "EngineCoreOutput", "EngineDeadError", "EngineInfo", "EngineStats"]
