"""``ROCmTritonSampler``: vllm-cuda's fused Gumbel-max sampler with the AMD device's launch configs."""

from __future__ import annotations

from typing import ClassVar

from vllm_cuda.kernels import LaunchConfigs, TritonSampler

from vllm_rocm.launch_amd import amd_launch_configs
from vllm_rocm.platform import device_arch


class ROCmTritonSampler(TritonSampler):
    """The shared sampler kernels, launched with the AMD table entry of the current device."""

    name: ClassVar[str] = "triton-rocm"

    @classmethod
    def default_configs(cls) -> LaunchConfigs:
        return amd_launch_configs(device_arch())
