"""``CPUPlatform``: the host CPU with tuned native ops and a batched attention backend."""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from vllm_core.plugins.api import ConfigError, Ops, Platform, cpu_memory_info

if TYPE_CHECKING:
    from vllm_core.plugins.api import CacheConfig, GraphRunner
    from vllm_cpu import memory

logger = logging.getLogger(__name__)

ENV_NUM_THREADS = "VLLM_CPU_NUM_THREADS"


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def int_from_env(name: str, minimum: int, expected: str, fix: Callable[[], str]) -> int | None:
    """Environment variable ``name`` as an int ``>= minimum``, None when unset or empty; any
    other value raises ``ConfigError``: "NAME='raw' is not <expected>; <fix()>"."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} is not {expected}; {fix()}")
    return value


def num_threads_from_env() -> int | None:
    """``VLLM_CPU_NUM_THREADS`` as a positive int, None when unset or empty."""
    return int_from_env(
        ENV_NUM_THREADS, 1, "a positive integer",
        lambda: f"set it to a thread count (this machine has {available_cores()} usable cores) or unset it to use "
        "them all",
    )


def keep_freed_memory() -> bool:
    """Make glibc's malloc reuse freed blocks instead of returning them to the kernel.

    By default every block over 32 MiB is a fresh ``mmap`` (and earlier ones are trimmed), so
    each large activation of a prefill (a [8192, 3072] float32 projection is 100 MB) is paged in
    again: measured here, allocating and filling 100 MB took 50 ms that way and 10 ms with this.
    One arena, no mmap, no trimming: the heap keeps its peak size. False where this is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8
    ok = libc.mallopt(m_arena_max, 1) and libc.mallopt(m_mmap_max, 0)
    return bool(ok and libc.mallopt(m_trim_threshold, 2**31 - 1))


class CPUPlatform(Platform):
    """The host CPU: intra-op threads on every usable core, fused native ops, batched attention."""

    name: ClassVar[str] = "cpu"
    device_type: ClassVar[str] = "cpu"
    priority: ClassVar[int] = 10
    distribution: ClassVar[str] = "vllm-cpu"
    default_block_size: ClassVar[int] = 128
    """As vLLM's CPU backend: a decode reads each block of 128 tokens as one contiguous run, which
    the memory prefetchers stream (16-token blocks drew half the bandwidth here)."""
    default_max_num_batched_tokens: ClassVar[int] = 2048
    """Steps of at most 2048 tokens: the GEMMs are as fast per token from a few hundred rows on,
    and a step's activations are a quarter of 8192's. Every new high-water mark of the heap is
    paged in (the first 8192-token prefill of W1 faulted 2.3 GB in, ~2 s); 2048 measured W1
    float32 35.9 s against 37.4-38.0 s, alternating."""

    def __init__(self) -> None:
        super().__init__()
        self._kv_reservation: memory.Reservation | None = None

    @classmethod
    def is_available(cls) -> str | None:
        # Every PyTorch build runs on the CPU.
        return None

    def memory_info(self) -> tuple[int, int]:
        return cpu_memory_info()

    def capabilities(self) -> frozenset[str]:
        return frozenset({"cpu"})

    def prepare_kv_cache(self, cache_config: CacheConfig) -> int | None:
        """Set the cache's budget aside (``kv_cache_memory_bytes``, else the default sizing) in a
        ``memory.Reservation`` whose pages background threads fault in while the model loads;
        None (nothing prepared) with ``num_gpu_blocks_override`` or a budget under 4 MiB."""
        from vllm_cpu import memory

        self.kv_cache_allocated()
        if cache_config.num_gpu_blocks_override is not None:
            return None
        nbytes = cache_config.kv_cache_memory_bytes or self.kv_cache_bytes(cache_config, 0)
        if nbytes < memory.MIN_BYTES:
            return None
        self._kv_reservation = memory.Reservation(nbytes)
        return nbytes

    def kv_cache_allocated(self) -> None:
        reservation, self._kv_reservation = self._kv_reservation, None
        if reservation is not None:
            reservation.release()

    def allocate_kv_cache(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """Zeros with every page faulted in before the first step: from the reservation of
        ``prepare_kv_cache`` when there is one, else a mapping of its own faulted in now on all
        cores (``vllm_cpu.memory``; transparent huge pages when ``VLLM_CPU_HUGE_PAGES=1``).
        Faulting pages in as blocks are first written would spread the cost over the first runs
        instead: the block pool hands out unused blocks first, so each W1 run touched another
        ~1.1 GiB (217k faults in a second run, against ~1k with the cache faulted in)."""
        from vllm_cpu import memory

        if self._kv_reservation is not None:
            cache = self._kv_reservation.take(shape, dtype)
            if cache is not None:
                return cache
        return memory.zeros(shape, dtype, prefault=True)

    def supported_dtypes(self) -> tuple[torch.dtype, ...]:
        return (torch.float32, torch.bfloat16, torch.float16)

    def num_threads(self) -> int:
        """``VLLM_CPU_NUM_THREADS``, else one thread per usable core."""
        return num_threads_from_env() or available_cores()

    def setup(self) -> None:
        """With the C kernels, their pool runs the heavy ops on ``num_threads()`` threads and
        PyTorch runs single-threaded; without them, PyTorch gets ``num_threads()`` threads.
        Freed memory stays in the process (``keep_freed_memory``)."""
        keep_freed_memory()
        threads = self.num_threads()
        kernels = getattr(self.ops, "kernels", None)
        torch.set_num_threads(1 if kernels is not None else threads)
        logger.info(
            "cpu platform: %s", f"C kernels on {kernels.num_threads} threads, torch 1 thread"
            if kernels is not None else f"{threads} torch threads",
        )

    def sampler_name(self) -> str:
        """``cpu``: the reference sampler with its argmax on the C kernels."""
        return "cpu"

    def make_graph_runner(self, model: Any, max_num_seqs: int, max_model_len: int, block_size: int) -> GraphRunner | None:
        """Recorded kernel plans for decode batches up to ``VLLM_CPU_GRAPH_MAX_BATCH`` rows
        (``vllm_cpu.graph_runner``); None without the C kernels or with the variable at 0."""
        from vllm_cpu.graph_runner import CPUGraphRunner, max_captured_batch

        limit = max_captured_batch()
        if getattr(self.ops, "lib", None) is None or limit == 0:
            return None
        return CPUGraphRunner(model, self.ops, max_num_seqs, max_model_len, block_size, limit)

    def make_ops(self) -> Ops:
        from vllm_cpu.kernels import load_kernels
        from vllm_cpu.ops import CPUOps

        return CPUOps(load_kernels(self.num_threads()))
