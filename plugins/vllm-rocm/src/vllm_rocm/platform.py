"""``ROCmPlatform``: AMD GPUs through ROCm torch and vllm-cuda's Triton kernels.

PyTorch's ROCm builds keep the ``cuda`` device type and API (``torch.version.hip`` tells them
apart), so everything that only talks to ``torch.cuda`` (memory, streams, pinned copies, HIP
graphs through ``torch.cuda.CUDAGraph``) comes from the shared ``TorchGPUPlatform``; this class
adds detection, the architecture (``gcnArchName``: ``gfx942``, ``gfx950``, ...), its launch
configs, its capabilities and its FP8 type. Tensor parallel runs on RCCL, which torch.distributed
exposes under the backend name ``nccl``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from vllm_cuda.kernels import KERNELS_API_VERSION, LaunchConfigs, TorchGPUPlatform, TritonOps

from vllm_core.plugins.api import Ops
from vllm_rocm.fp8 import fp8_dtype_for
from vllm_rocm.kernels_compat import check_kernels_api
from vllm_rocm.launch_amd import amd_launch_configs, base_arch
from vllm_rocm.plugin import VLLM_CUDA_KERNELS_API

check_kernels_api(KERNELS_API_VERSION, VLLM_CUDA_KERNELS_API)

NO_BF16_ARCHS = frozenset({"gfx900", "gfx906", "gfx908"})
"""GCN5 / CDNA1: no bfloat16 arithmetic worth using."""


def device_arch(index: int | None = None) -> str:
    """The architecture of a visible AMD GPU, without feature flags (``gfx942``)."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device() if index is None else index)
    return base_arch(props.gcnArchName)


class ROCmPlatform(TorchGPUPlatform):
    """One AMD GPU (MI300X / MI325X / MI350X / MI355X; others with generic launch configs)."""

    name: ClassVar[str] = "rocm"
    priority: ClassVar[int] = 110
    """Above ``cuda`` (100): on a ROCm torch both probe the same ``torch.cuda`` API."""
    distribution: ClassVar[str] = "vllm-rocm"
    dist_backend: ClassVar[str] = "nccl"
    """RCCL: ROCm's torch.distributed serves it under the ``nccl`` name."""

    @classmethod
    def is_available(cls) -> str | None:
        if not getattr(torch.version, "hip", None):
            build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU build"
            return (f"this torch is {build}, not a ROCm build (torch.version.hip is unset); "
                    "install torch from https://download.pytorch.org/whl/rocm6.4 (or newer)")
        if not torch.cuda.is_available() or torch.cuda.device_count() == 0:
            return ("no AMD GPU is visible to ROCm torch (check HIP_VISIBLE_DEVICES / "
                    "ROCR_VISIBLE_DEVICES and access to /dev/kfd and /dev/dri)")
        try:
            import triton  # noqa: F401
        except ImportError:
            return "triton is not installed (pip install triton; ROCm torch wheels pull in pytorch-triton-rocm)"
        return None

    def arch(self) -> str:
        """``gfx942`` for an MI300X (from ``torch.cuda.get_device_properties().gcnArchName``)."""
        return device_arch(self.device().index)

    def launch_configs(self) -> LaunchConfigs:
        """The AMD table entry of this device (``vllm_rocm.launch_amd``)."""
        return amd_launch_configs(self.arch())

    def capabilities(self) -> frozenset[str]:
        arch = self.arch()
        caps = {"rocm", "triton", "hip_graphs", arch}
        if arch not in NO_BF16_ARCHS:
            caps.add("bf16")
        if fp8_dtype_for(arch) is not None:
            caps.add("fp8")
        return frozenset(caps)

    def fp8_dtype(self) -> torch.dtype | None:
        """The e4m3 FP8 dtype this GPU computes in: ``float8_e4m3fnuz`` on gfx94x, OCP
        ``float8_e4m3fn`` on gfx950; None without FP8 units. Convert e4m3fn checkpoints for a
        fnuz device with ``vllm_rocm.fp8.e4m3fn_to_e4m3fnuz``."""
        return fp8_dtype_for(self.arch())

    def sampler_name(self) -> str:
        return "triton-rocm"

    def make_ops(self) -> Ops:
        # chosen on first use: the platform is made before the device is set up
        return TritonOps(self.launch_configs)

    def describe(self) -> str:
        return f"rocm ({torch.cuda.get_device_name(self.device())}, {self.arch()}, vllm-rocm)"
