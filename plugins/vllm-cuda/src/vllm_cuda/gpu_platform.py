"""``TorchGPUPlatform``: what a platform on torch's ``cuda`` device API does, NVIDIA or AMD alike.

PyTorch's ROCm builds keep the device type ``cuda`` and the ``torch.cuda`` API (streams, events,
pinned memory, memory statistics, graphs: HIP graphs there), so this base holds every method
that only talks to that API. ``CUDAPlatform`` and ``vllm_rocm``'s ``ROCmPlatform`` add their
detection, capabilities and launch configs. Not registered itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from vllm_core.plugins.api import GraphRunner, Platform


class TorchGPUPlatform(Platform):
    """One GPU behind ``torch.cuda`` (tensor parallel over the ``nccl`` backend: NCCL or RCCL)."""

    device_type: ClassVar[str] = "cuda"
    dist_backend: ClassVar[str] = "nccl"
    is_accelerator: ClassVar[bool] = True
    async_scheduling: ClassVar[bool] = True

    def device(self, index: int = 0) -> torch.device:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", index)))

    def device_count(self) -> int | None:
        """GPUs visible to this process (one tensor / pipeline rank each)."""
        return torch.cuda.device_count()

    def setup(self) -> None:
        torch.cuda.set_device(self.device())
        torch.backends.cuda.matmul.allow_tf32 = False

    def memory_info(self) -> tuple[int, int]:
        free, total = torch.cuda.mem_get_info(self.device())
        return int(free), int(total)

    def supported_dtypes(self) -> tuple[torch.dtype, ...]:
        return (torch.bfloat16, torch.float16, torch.float32)

    def to_host_async(self, tensor: torch.Tensor) -> Callable[[], list[int]]:
        """Copy into pinned host memory behind the queued work; the returned function waits on
        an event for exactly that copy (not for work launched later)."""
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        host.copy_(tensor, non_blocking=True)
        done = torch.cuda.Event()
        done.record()

        def fetch() -> list[int]:
            done.synchronize()
            return host.tolist()

        return fetch

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device())

    def reset_peak_memory(self) -> None:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self.device())

    def peak_memory_bytes(self) -> int | None:
        return int(torch.cuda.max_memory_allocated(self.device()))

    def current_memory_bytes(self) -> int | None:
        return int(torch.cuda.memory_allocated(self.device()))

    def make_graph_runner(self, model: Any, max_num_seqs: int, max_model_len: int, block_size: int) -> GraphRunner | None:
        """Graphs for decode batches through ``torch.cuda.CUDAGraph`` (HIP graphs on ROCm)."""
        from vllm_cuda.graph_runner import CUDAGraphRunner

        return CUDAGraphRunner(model, self.device(), max_num_seqs, max_model_len, block_size)
