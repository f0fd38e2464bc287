"""The AMD launch-config table: CDNA3 (``gfx942``: MI300X, MI325X), CDNA4 (``gfx950``: MI350X,
MI355X) and a generic fallback for other AMD GPUs.

On AMD a warp is a 64-lane wavefront (``num_warps`` counts waves), and Triton's AMD backend
takes three more options: ``waves_per_eu`` (an occupancy hint that caps registers per wave),
``matrix_instr_nonkdim`` (16: the 16x16 MFMA instructions for ``tl.dot``) and ``kpack`` (2
packs the dot operands' K dimension on gfx942; deprecated from gfx950, where Triton resets it to
1 with a warning, so the gfx950 entry leaves it out). AMD's ``tl.dot`` accepts only ``ieee``,
``bf16x3`` or ``bf16x6`` as input precision.

How the values were chosen (none has been timed on an AMD GPU yet: no AMD machine was
reachable; tune them with ``benchmarks/attn_bench.py`` on one):

- element-wise kernels (norms, rotary, SiLU, KV write, sampler) keep the lanes per element of
  the NVIDIA entry: half as many 64-lane waves as NVIDIA has 32-lane warps;
- the attention kernels keep 4 waves per program and take the ROCm settings that vLLM's and
  SGLang's Triton decode attention use on MI300 (``waves_per_eu=1, matrix_instr_nonkdim=16,
  kpack=2``, one pipeline stage: gfx942's 64 KiB LDS holds no second stage of a 64 x 128 K and
  V tile besides Q); gfx950's 160 KiB LDS lets prefill keep two stages;
- the split-KV thresholds scale with the compute units (304 on MI300X, 256 on MI355X).

``vllm_rocm.compile_check`` compiles every kernel with these entries for its architecture and
holds each to ``lds_bytes``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from types import MappingProxyType

from vllm_cuda.kernels import AttentionLaunch, Launch, LaunchConfigs, SamplerLaunch, select_configs

_MFMA = (("matrix_instr_nonkdim", 16),)
_CDNA3_DOT = (("waves_per_eu", 1), *_MFMA, ("kpack", 2))
_CDNA4_DOT = (("waves_per_eu", 1), *_MFMA)


def _attention(dot: tuple[tuple[str, int], ...], prefill_stages: int, num_cus: int) -> AttentionLaunch:
    return AttentionLaunch(
        decode=Launch(num_warps=4, num_stages=1, backend=dot),
        prefill=Launch(num_warps=4, num_stages=prefill_stages, backend=dot),
        prefill_block_m=64,
        prefill_block_n=64,
        block_n=64,
        block_n_large_head=32,
        split_decode=Launch(num_warps=4, num_stages=1, backend=dot),
        split_reduce=Launch(num_warps=2),
        partition_size=512,
        split_kv_target_programs=2 * num_cus,
        split_kv_min_seq_len=256,
        split_kv_max_programs=num_cus // 64 * 64,
        dot_precision_16bit="ieee",
    )


def _cdna(name: str, attention: AttentionLaunch, lds_bytes: int) -> LaunchConfigs:
    return LaunchConfigs(
        name=name,
        warp_size=64,
        attention=attention,
        sampler=SamplerLaunch(chunk=8192, block=2048, partial=Launch(num_warps=4), reduce=Launch(num_warps=1)),
        norm_elements_per_lane=8,  # 512 elements per 64-lane wave
        norm_max_warps=16,  # 1024 lanes, the largest AMD workgroup
        norm=Launch(),
        rotary=Launch(num_warps=2),
        silu_block=1024,
        silu=Launch(num_warps=2),
        kv_cache=Launch(num_warps=2),
        lds_bytes=lds_bytes,
    )


_GENERIC = _cdna("amd", _attention((), prefill_stages=1, num_cus=128), lds_bytes=64 * 1024)

AMD_LAUNCH_CONFIGS = MappingProxyType({
    "gfx942": _cdna("gfx942", _attention(_CDNA3_DOT, prefill_stages=1, num_cus=304), lds_bytes=64 * 1024),
    "gfx950": _cdna("gfx950", _attention(_CDNA4_DOT, prefill_stages=2, num_cus=256), lds_bytes=160 * 1024),
    "amd": _GENERIC,
})
"""Architecture -> configs; ``amd`` (no backend options, one pipeline stage, 64 KiB LDS) is the
fallback for architectures not listed."""


def base_arch(gcn_arch_name: str) -> str:
    """``gfx942:sramecc+:xnack-`` (``torch.cuda.get_device_properties().gcnArchName``) -> ``gfx942``."""
    return gcn_arch_name.split(":", 1)[0].strip()


def warp_size_of(arch: str) -> int:
    """64 on GCN / CDNA (gfx9 and older), 32 on RDNA (gfx10 and newer), as Triton's AMD backend."""
    match = re.fullmatch(r"gfx(\d+)[0-9a-f]{2}", arch)
    return 32 if match and int(match.group(1)) >= 10 else 64


def amd_launch_configs(gcn_arch_name: str) -> LaunchConfigs:
    """The table entry for a device of this architecture; the generic one (with the
    architecture's wave size) for one the table does not list."""
    arch = base_arch(gcn_arch_name)
    configs = select_configs(AMD_LAUNCH_CONFIGS, arch, "amd")
    if configs is _GENERIC and warp_size_of(arch) != configs.warp_size:
        configs = replace(configs, name=f"amd-wave{warp_size_of(arch)}", warp_size=warp_size_of(arch))
    return configs
