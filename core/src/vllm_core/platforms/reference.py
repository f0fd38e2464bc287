"""The reference platform: plain PyTorch on the CPU, lowest priority, runs anywhere.

It is the oracle every other backend is compared against: native ops, the reference
attention backend and the reference sampler, with no tuning.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from vllm_core.platforms.interface import Platform


def cpu_memory_info() -> tuple[int, int]:
    """(available, total) bytes of system memory, from /proc/meminfo where it exists."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return info.get("MemAvailable", info["MemFree"]), info["MemTotal"]
    except (OSError, KeyError, ValueError):
        return 8 << 30, 16 << 30


class ReferencePlatform(Platform):
    """Pure PyTorch on the CPU; correctness first, speed second."""

    name: ClassVar[str] = "reference"
    device_type: ClassVar[str] = "cpu"
    priority: ClassVar[int] = 0

    @classmethod
    def is_available(cls) -> str | None:
        return None

    def memory_info(self) -> tuple[int, int]:
        return cpu_memory_info()

    def capabilities(self) -> frozenset[str]:
        return frozenset({"reference"})

    def supported_dtypes(self) -> tuple[torch.dtype, ...]:
        return (torch.float32, torch.bfloat16, torch.float16)
