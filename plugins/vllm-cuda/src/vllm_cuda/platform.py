"""``CUDAPlatform``: NVIDIA GPUs through CUDA torch and Triton."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from vllm_core.plugins.api import GraphRunner, Ops, Platform


class CUDAPlatform(Platform):
    """One NVIDIA GPU (tensor parallel over NCCL later)."""

    name: ClassVar[str] = "cuda"
    device_type: ClassVar[str] = "cuda"
    priority: ClassVar[int] = 100
    distribution: ClassVar[str] = "vllm-cuda"
    dist_backend: ClassVar[str] = "nccl"
    is_accelerator: ClassVar[bool] = True
    async_scheduling: ClassVar[bool] = True

    @classmethod
    def is_available(cls) -> str | None:
        if getattr(torch.version, "hip", None):
            return "this torch is a ROCm build (use vllm-rocm)"
        if torch.version.cuda is None:
            return "this torch has no CUDA support (CPU build)"
        if not torch.cuda.is_available():
            return "no CUDA device is visible"
        try:
            import triton  # noqa: F401
        except ImportError:
            return "triton is not installed (pip install triton)"
        return None

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

    def capabilities(self) -> frozenset[str]:
        major, minor = torch.cuda.get_device_capability(self.device())
        caps = {"cuda", "triton", "cuda_graphs", f"sm{major}{minor}"}
        if major >= 8:
            caps.add("bf16")
        if major >= 9:
            caps.add("hopper")
        return frozenset(caps)

    def supported_dtypes(self) -> tuple[torch.dtype, ...]:
        return (torch.bfloat16, torch.float16, torch.float32)

    def sampler_name(self) -> str:
        return "triton"

    def make_ops(self) -> Ops:
        from vllm_cuda.cuda_ops import CUDAOps

        return CUDAOps()

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
        from vllm_cuda.graph_runner import CUDAGraphRunner

        return CUDAGraphRunner(model, self.device(), max_num_seqs, max_model_len, block_size)

    def describe(self) -> str:
        return f"cuda ({torch.cuda.get_device_name(self.device())}, vllm-cuda)"
