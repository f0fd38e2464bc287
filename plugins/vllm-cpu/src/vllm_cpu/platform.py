"""``CPUPlatform``: the host CPU with tuned native ops and a batched attention backend."""

from __future__ import annotations

import logging
import os
from typing import ClassVar

import torch

from vllm_core.errors import ConfigError
from vllm_core.platforms.interface import Platform
from vllm_core.platforms.ops import Ops
from vllm_core.platforms.reference import cpu_memory_info

logger = logging.getLogger(__name__)

ENV_NUM_THREADS = "VLLM_CPU_NUM_THREADS"


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def num_threads_from_env() -> int | None:
    """``VLLM_CPU_NUM_THREADS`` as a positive int, None when unset or empty."""
    raw = os.environ.get(ENV_NUM_THREADS, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigError(
            f"{ENV_NUM_THREADS}={raw!r} is not a positive integer; set it to a thread count "
            f"(this machine has {available_cores()} usable cores) or unset it to use them all"
        )
    return value


class CPUPlatform(Platform):
    """The host CPU: intra-op threads on every usable core, fused native ops, batched attention."""

    name: ClassVar[str] = "cpu"
    device_type: ClassVar[str] = "cpu"
    priority: ClassVar[int] = 10
    distribution: ClassVar[str] = "vllm-cpu"

    @classmethod
    def is_available(cls) -> str | None:
        # Every PyTorch build runs on the CPU.
        return None

    def memory_info(self) -> tuple[int, int]:
        return cpu_memory_info()

    def capabilities(self) -> frozenset[str]:
        return frozenset({"cpu"})

    def supported_dtypes(self) -> tuple[torch.dtype, ...]:
        return (torch.float32, torch.bfloat16, torch.float16)

    def setup(self) -> None:
        """Use ``VLLM_CPU_NUM_THREADS`` intra-op threads, else one per usable core."""
        threads = num_threads_from_env() or available_cores()
        torch.set_num_threads(threads)
        logger.info("cpu platform: %d torch threads", threads)

    def make_ops(self) -> Ops:
        from vllm_cpu.ops import CPUOps

        return CPUOps()
