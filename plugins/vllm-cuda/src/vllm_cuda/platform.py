"""``CUDAPlatform``: NVIDIA GPUs through CUDA torch and Triton."""

from __future__ import annotations

from typing import ClassVar

import torch

from vllm_core.plugins.api import Ops
from vllm_cuda.gpu_platform import TorchGPUPlatform
from vllm_cuda.launch import LaunchConfigs
from vllm_cuda.launch_nvidia import nvidia_launch_configs


class CUDAPlatform(TorchGPUPlatform):
    """One NVIDIA GPU (tensor parallel over NCCL later)."""

    name: ClassVar[str] = "cuda"
    priority: ClassVar[int] = 100
    distribution: ClassVar[str] = "vllm-cuda"

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

    def capabilities(self) -> frozenset[str]:
        major, minor = torch.cuda.get_device_capability(self.device())
        caps = {"cuda", "triton", "cuda_graphs", f"sm{major}{minor}"}
        if major >= 8:
            caps.add("bf16")
        if major >= 9:
            caps.add("hopper")
        return frozenset(caps)

    def launch_configs(self) -> LaunchConfigs:
        """The NVIDIA table entry of this device (``vllm_cuda.launch_nvidia``)."""
        return nvidia_launch_configs(torch.cuda.get_device_capability(self.device()))

    def sampler_name(self) -> str:
        return "triton"

    def make_ops(self) -> Ops:
        from vllm_cuda.cuda_ops import TritonOps

        # chosen on first use: the platform is made before the device is set up
        return TritonOps(self.launch_configs)

    def describe(self) -> str:
        return f"cuda ({torch.cuda.get_device_name(self.device())}, vllm-cuda)"
