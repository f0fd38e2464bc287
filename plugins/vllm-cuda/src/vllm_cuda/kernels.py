"""The public surface of vllm-cuda's Triton kernels, for other GPU platform plugins (vllm-rocm).

The kernels live in one place, ``vllm_cuda.ops``, and run on any device Triton compiles for;
what differs between GPUs is the launch configuration, which the platform chooses from a
per-architecture table (``LaunchConfigs``) and passes in. A plugin for another GPU depends on
``vllm-cuda`` and imports only the names below (``tests/plugins/rocm/test_rocm_plugin.py`` walks
vllm-rocm's imports and fails on any other ``vllm_cuda`` module). Why this and not a separate
kernels package: see ``docs/architecture.md`` ("One Triton kernel source").

Compatibility: ``KERNELS_API_VERSION`` follows the plugin API's policy. Minor versions only add
(names, optional keyword arguments, ``LaunchConfigs`` fields with defaults); anything else is a
major version, and a dependent plugin pins ``vllm-cuda`` to the major it was written for.

Importing this module imports torch and triton and defines the kernels (nothing compiles until
a kernel first runs).
"""

from __future__ import annotations

from vllm_cuda.attention import TritonAttentionBackend
from vllm_cuda.compile_check import KernelReport, check_kernels
from vllm_cuda.cuda_ops import TritonOps
from vllm_cuda.gpu_platform import TorchGPUPlatform
from vllm_cuda.graph_runner import CUDAGraphRunner
from vllm_cuda.launch import AttentionLaunch, Launch, LaunchConfigs, SamplerLaunch, select_configs
from vllm_cuda.launch_nvidia import DEFAULT_LAUNCH_CONFIGS, NVIDIA_LAUNCH_CONFIGS, nvidia_launch_configs
from vllm_cuda.ops.activation import silu_and_mul
from vllm_cuda.ops.kv_cache import reshape_and_cache
from vllm_cuda.ops.norm import fused_add_rms_norm, rms_norm
from vllm_cuda.ops.paged_attention import paged_attention, split_partition_size, use_split_kv
from vllm_cuda.ops.rotary import qk_norm_rotary, rotary_embedding
from vllm_cuda.sampler import TritonSampler, gumbel_argmax

KERNELS_API_VERSION = "1.0"
"""Version of this module's names and signatures (semver; see the module docstring)."""

__all__ = [
    "KERNELS_API_VERSION",
    # launch configurations
    "Launch", "AttentionLaunch", "SamplerLaunch", "LaunchConfigs", "select_configs",
    "NVIDIA_LAUNCH_CONFIGS", "DEFAULT_LAUNCH_CONFIGS", "nvidia_launch_configs",
    # what a platform on torch.cuda plugs in
    "TorchGPUPlatform", "TritonOps", "TritonAttentionBackend", "TritonSampler", "CUDAGraphRunner",
    # the kernels (each takes ``configs``)
    "rms_norm", "fused_add_rms_norm", "rotary_embedding", "qk_norm_rotary", "silu_and_mul",
    "reshape_and_cache", "paged_attention", "use_split_kv", "split_partition_size", "gumbel_argmax",
    # compile every kernel for a GPUTarget with a table entry, without the GPU
    "check_kernels", "KernelReport",
]
