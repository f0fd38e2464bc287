"""The NVIDIA launch-config table: Hopper (``sm_90``: H100, H200) and every other NVIDIA GPU.

The values are the ones the kernels were tuned with on an H200 (``benchmarks/attn_bench.py``;
``benchmarks/results/h200_*``); ``tests/plugins/cuda/test_launch_configs.py`` pins the ``sm_90``
entry to them. Other NVIDIA GPUs use the same values until someone tunes them.
"""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

from vllm_cuda.launch import AttentionLaunch, Launch, LaunchConfigs, SamplerLaunch, select_configs

_HOPPER_ATTENTION = AttentionLaunch(
    decode=Launch(num_warps=4),
    # On an H200, 2 stages run Qwen3-0.6B's prefill attention 7-9 % faster than 3; 8 warps or
    # 128-row tiles run slower.
    prefill=Launch(num_warps=4, num_stages=2),
    prefill_block_m=64,
    prefill_block_n=64,
    block_n=64,
    block_n_large_head=32,
    split_decode=Launch(num_warps=4),
    split_reduce=Launch(num_warps=4),
    partition_size=512,
    split_kv_target_programs=256,  # two per SM of an H100 / H200 (132 SMs)
    split_kv_min_seq_len=256,
    split_kv_max_programs=128,
    dot_precision_16bit="tf32",
)

_HOPPER = LaunchConfigs(
    name="sm_90",
    warp_size=32,
    attention=_HOPPER_ATTENTION,
    # One program per (row, 8192-entry vocabulary chunk) fills the GPU even at batch 1.
    sampler=SamplerLaunch(chunk=8192, block=2048, partial=Launch(num_warps=8), reduce=Launch(num_warps=1)),
    norm_elements_per_lane=8,  # 256 elements per 32-lane warp
    norm_max_warps=16,
    norm=Launch(),
    rotary=Launch(num_warps=4),
    silu_block=1024,
    silu=Launch(num_warps=4),
    kv_cache=Launch(),  # Triton's default warps
    lds_bytes=232448,  # 227 KiB of shared memory per block on sm_90
)

NVIDIA_LAUNCH_CONFIGS = MappingProxyType({
    "sm_90": _HOPPER,
    "nvidia": replace(_HOPPER, name="nvidia", lds_bytes=None),
})
"""Architecture -> configs; ``nvidia`` is the fallback for architectures not listed."""

DEFAULT_LAUNCH_CONFIGS = NVIDIA_LAUNCH_CONFIGS["nvidia"]
"""What the kernel wrappers use when no configs are passed (tests, benchmarks, direct calls)."""


def nvidia_arch(capability: tuple[int, int]) -> str:
    """``(9, 0)`` -> ``sm_90``."""
    return f"sm_{capability[0]}{capability[1]}"


def nvidia_launch_configs(capability: tuple[int, int]) -> LaunchConfigs:
    """The table entry for a device of this compute capability (``torch.cuda.get_device_capability``)."""
    return select_configs(NVIDIA_LAUNCH_CONFIGS, nvidia_arch(capability), "nvidia")
