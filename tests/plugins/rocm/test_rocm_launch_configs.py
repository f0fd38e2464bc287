"""The AMD table: what each entry holds and what the shared kernels' wrappers launch with it
(recorded without running: ``vllm_cuda.compile_check.record_launches``)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import import_or_require

import_or_require("vllm_rocm", "rocm")

from vllm_cuda.compile_check import kernel_cases, record_launches  # noqa: E402
from vllm_cuda.kernels import NVIDIA_LAUNCH_CONFIGS, LaunchConfigs  # noqa: E402
from vllm_rocm.launch_amd import AMD_LAUNCH_CONFIGS, amd_launch_configs, base_arch, warp_size_of  # noqa: E402

ENTRIES = {**AMD_LAUNCH_CONFIGS, "amd-wave32": amd_launch_configs("gfx1100")}
MAX_WORKGROUP_LANES = 1024
DOT_KERNELS = {"_unified_attention_kernel", "_split_kv_decode_kernel"}


def test_architecture_names_and_fallbacks() -> None:
    assert base_arch("gfx942:sramecc+:xnack-") == "gfx942"
    assert amd_launch_configs("gfx942:sramecc+:xnack-") is AMD_LAUNCH_CONFIGS["gfx942"]
    assert amd_launch_configs("gfx950") is AMD_LAUNCH_CONFIGS["gfx950"]
    assert amd_launch_configs("gfx90a") is AMD_LAUNCH_CONFIGS["amd"]  # MI200: the generic entry
    assert [warp_size_of(a) for a in ("gfx90a", "gfx942", "gfx950", "gfx1100", "gfx1201")] == [64, 64, 64, 32, 32]
    rdna = amd_launch_configs("gfx1100")
    assert rdna.name == "amd-wave32" and rdna.warp_size == 32


def test_cdna_entries_count_64_lane_waves() -> None:
    for name in ("gfx942", "gfx950", "amd"):
        c = AMD_LAUNCH_CONFIGS[name]
        assert c.warp_size == 64
        # a 4096-wide RMSNorm row: 8 elements per lane -> 8 waves (NVIDIA: 16 warps of 32 lanes)
        assert c.norm_num_warps(4096) == 8 and NVIDIA_LAUNCH_CONFIGS["sm_90"].norm_num_warps(4096) == 16
        assert c.attention.dot_precision_16bit == "ieee"


def test_amd_compile_options_per_architecture() -> None:
    g942, g950, generic = (AMD_LAUNCH_CONFIGS[n].attention for n in ("gfx942", "gfx950", "amd"))
    assert dict(g942.decode.backend) == {"waves_per_eu": 1, "matrix_instr_nonkdim": 16, "kpack": 2}
    # kpack is deprecated from gfx950 (Triton resets it to 1 with a warning): not set there
    assert dict(g950.decode.backend) == {"waves_per_eu": 1, "matrix_instr_nonkdim": 16}
    assert generic.decode.backend == () and generic.prefill.backend == ()
    # gfx942's 64 KiB LDS: one pipeline stage (two overflow it in float32, test_rocm_compile.py)
    assert g942.prefill.num_stages == 1 and g950.prefill.num_stages == 2
    assert AMD_LAUNCH_CONFIGS["gfx942"].lds_bytes == 64 * 1024
    assert AMD_LAUNCH_CONFIGS["gfx950"].lds_bytes == 160 * 1024


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_every_launch_takes_the_entry(entry: str) -> None:
    """Every launch of every case carries the entry's options: power-of-two warps within one
    workgroup's lanes, the AMD compile options on the dot kernels, ``ieee`` dots."""
    configs: LaunchConfigs = ENTRIES[entry]
    backend = dict(configs.attention.decode.backend)
    seen = set()
    for case, call in kernel_cases(configs, torch.float16).items():
        with record_launches() as launches:
            call()
        assert launches, f"{case} launched nothing"
        for launch in launches:
            seen.add(launch.name)
            warps = launch.options.get("num_warps", 4)
            assert warps & (warps - 1) == 0 and warps * configs.warp_size <= MAX_WORKGROUP_LANES, (case, launch.options)
            if launch.name in DOT_KERNELS:
                assert {k: launch.options[k] for k in backend} == backend, (case, launch.options)
                assert launch.args["DOT_PRECISION"] == "ieee"
    assert len(seen) == 11, f"the cases reach all 11 shared kernels: {sorted(seen)}"
