"""Launch configurations of the shared Triton kernels, one table entry per GPU architecture.

The kernels in ``vllm_cuda.ops`` hold no tuning constants: every tile size, warp count,
pipelining depth and backend-specific option comes from a ``LaunchConfigs`` that the platform
chooses for its device (``vllm_cuda.launch_nvidia`` for NVIDIA, ``vllm_rocm.launch_amd`` for
AMD) and hands to the kernels through its ops object (``TritonOps.configs``), the attention
backend (which reads the ops it is given) and the sampler.

``num_warps`` counts the device's warps: 32 lanes on NVIDIA, 64-lane wavefronts on AMD CDNA
(``LaunchConfigs.warp_size``). Where a kernel derives a warp count from a tile size it divides
by ``warp_size``, so no kernel assumes 32-lane warps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Launch:
    """Launch options of one kernel, as Triton takes them: ``kernel[grid](..., **launch.options)``.

    None leaves an option at Triton's default for the target (not passing it at all, so the
    compiled variant is exactly the one a launch without it gets).
    """

    num_warps: int | None = None
    """Warps (NVIDIA, 32 lanes) or wavefronts (AMD CDNA, 64 lanes) per program."""
    num_stages: int | None = None
    """Software-pipelining depth of the kernel's loops (shared memory / LDS grows with it)."""
    backend: tuple[tuple[str, int], ...] = ()
    """Backend-specific compile options, e.g. AMD's ``waves_per_eu``, ``matrix_instr_nonkdim``,
    ``kpack`` (a tuple of pairs, so that the config stays hashable)."""
    options: Mapping[str, Any] = field(init=False, repr=False, compare=False)
    """The keyword arguments to splat into the launch (built once)."""

    def __post_init__(self) -> None:
        opts: dict[str, Any] = dict(self.backend)
        if self.num_warps is not None:
            opts["num_warps"] = self.num_warps
        if self.num_stages is not None:
            opts["num_stages"] = self.num_stages
        object.__setattr__(self, "options", MappingProxyType(opts))


@dataclass(frozen=True)
class AttentionLaunch:
    """Tiles and launches of the paged-attention kernels (``vllm_cuda.ops.paged_attention``)."""

    decode: Launch
    """The unified kernel when every row of the batch is a decode (one token)."""
    prefill: Launch
    """The unified kernel when the batch has prefill chunks (its mask-free pass runs too)."""
    prefill_block_m: int
    """Rows (query token x head-in-group pairs) of one unified-kernel program with prefills."""
    prefill_block_n: int
    """KV tokens per tile of the unified kernel with prefills, head sizes <= 128."""
    block_n: int
    """KV tokens per tile otherwise (decode batches, split-KV), head sizes <= 128."""
    block_n_large_head: int
    """KV tokens per tile for head sizes above 128 (both paths)."""
    split_decode: Launch
    """The split-KV partial kernel (one program per request, KV head, partition)."""
    split_reduce: Launch
    """The split-KV merge kernel (one program per request, query head)."""
    partition_size: int
    """Largest KV tokens per split-KV partition (a multiple of every KV tile)."""
    split_kv_target_programs: int
    """Split-KV aims at about this many programs (about two per SM / CU)."""
    split_kv_min_seq_len: int
    """Split decode rows' KV only when the longest sequence is at least this long ..."""
    split_kv_max_programs: int
    """... and the unified grid would have at most this many decode programs (fewer than the
    device's SMs / CUs)."""
    dot_precision_16bit: str
    """``tl.dot`` ``input_precision`` for 16-bit inputs (float32 inputs always use ``ieee``, the
    reference's exact products). 16-bit operands multiply exactly whatever it says; the NVIDIA
    entries keep the ``tf32`` they always passed, the AMD entries say ``ieee`` (AMD's backend
    lists only ``ieee``, ``bf16x3`` and ``bf16x6``)."""


@dataclass(frozen=True)
class SamplerLaunch:
    """The fused Gumbel-max sampler (``vllm_cuda.sampler``)."""

    chunk: int
    """Vocabulary entries per program of the partial kernel."""
    block: int
    """Vocabulary entries per loop iteration of the partial kernel."""
    partial: Launch
    reduce: Launch


@dataclass(frozen=True)
class LaunchConfigs:
    """Everything the shared Triton kernels need to know about one GPU architecture."""

    name: str
    """The table key it was chosen under (``sm_90``, ``nvidia``, ``gfx942``, ``gfx950``, ``amd``)."""
    warp_size: int
    """Lanes per warp / wavefront: 32 on NVIDIA, 64 on AMD CDNA."""
    attention: AttentionLaunch
    sampler: SamplerLaunch
    norm_elements_per_lane: int
    """RMSNorm: a row of BLOCK elements gets ``BLOCK / (elements_per_lane * warp_size)`` warps ..."""
    norm_max_warps: int
    """... at least one and at most this many."""
    norm: Launch
    """Other options of the RMSNorm kernels (their ``num_warps`` comes from the two above)."""
    rotary: Launch
    """The rotary and fused q/k-norm + rotary kernels."""
    silu_block: int
    """Largest column tile of ``silu_and_mul``."""
    silu: Launch
    kv_cache: Launch
    """``reshape_and_cache``."""
    lds_bytes: int | None = None
    """Shared memory (LDS) per block the architecture allows, when known: the compile-only
    check (``vllm_cuda.compile_check``) holds every kernel to it."""

    def norm_num_warps(self, block: int) -> int:
        """Warps for an RMSNorm row of ``block`` (a power of two) elements."""
        return min(max(block // (self.norm_elements_per_lane * self.warp_size), 1), self.norm_max_warps)


def select_configs(table: Mapping[str, LaunchConfigs], arch: str, fallback: str) -> LaunchConfigs:
    """``table[arch]``, or ``table[fallback]`` for an architecture the table does not list."""
    if fallback not in table:
        raise KeyError(f"launch-config fallback {fallback!r} is not in the table; it lists {sorted(table)}")
    return table.get(arch, table[fallback])
