"""The NVIDIA launch-config table keeps the kernels' launches exactly as they were tuned on an
H200 before the configs moved out of the kernel files: the ``sm_90`` entry holds the old
constants, and every wrapper, given it, launches with the old options, tiles and constexprs
(recorded without running: ``vllm_cuda.compile_check.record_launches``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

pytest.importorskip("triton")
pytest.importorskip("vllm_cuda")

from vllm_cuda.compile_check import kernel_cases, record_launches  # noqa: E402
from vllm_cuda.launch import Launch  # noqa: E402
from vllm_cuda.launch_nvidia import NVIDIA_LAUNCH_CONFIGS, nvidia_launch_configs  # noqa: E402

SM90 = NVIDIA_LAUNCH_CONFIGS["sm_90"]


def test_sm90_entry_holds_the_constants_the_kernels_were_tuned_with() -> None:
    a = SM90.attention
    # paged_attention.py before the move: PREFILL_BLOCK_M/N 64, PREFILL_NUM_WARPS 4,
    # PREFILL_NUM_STAGES 2, PARTITION_SIZE 512, SPLIT_KV_TARGET_PROGRAMS 256,
    # SPLIT_KV_MIN_SEQ_LEN 256, SPLIT_KV_MAX_PROGRAMS 128, _block_n 64 / 32, num_warps=4 elsewhere.
    assert (a.prefill_block_m, a.prefill_block_n, a.block_n, a.block_n_large_head) == (64, 64, 64, 32)
    assert a.prefill == Launch(num_warps=4, num_stages=2)
    assert a.decode == a.split_decode == a.split_reduce == Launch(num_warps=4)
    assert (a.partition_size, a.split_kv_target_programs, a.split_kv_min_seq_len, a.split_kv_max_programs) == (
        512, 256, 256, 128)
    assert a.dot_precision_16bit == "tf32"
    # sampler.py: GUMBEL_CHUNK 8192, BLOCK 2048, 8 warps; reduce 1 warp
    assert (SM90.sampler.chunk, SM90.sampler.block) == (8192, 2048)
    assert SM90.sampler.partial == Launch(num_warps=8) and SM90.sampler.reduce == Launch(num_warps=1)
    # norm.py: min(max(block // 256, 1), 16) warps; activation.py BLOCK 1024, 4 warps;
    # rotary.py 4 warps; kv_cache.py Triton's default
    assert [SM90.norm_num_warps(b) for b in (64, 256, 1024, 4096, 8192, 65536)] == [1, 1, 4, 16, 16, 16]
    assert SM90.warp_size == 32 and SM90.norm == Launch()
    assert SM90.silu_block == 1024 and SM90.silu == Launch(num_warps=4)
    assert SM90.rotary == Launch(num_warps=4) and SM90.kv_cache == Launch()
    assert all(not launch.backend for launch in (a.decode, a.prefill, a.split_decode, SM90.silu, SM90.kv_cache))


def test_every_nvidia_gpu_gets_the_same_values() -> None:
    assert nvidia_launch_configs((9, 0)) is SM90
    generic = nvidia_launch_configs((8, 0))
    assert generic.name == "nvidia" and replace(generic, name="sm_90", lds_bytes=SM90.lds_bytes) == SM90
    assert nvidia_launch_configs((12, 0)) is generic


def launches(case: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(kernel, options, constexpr-like arguments) of each launch of one case with the sm_90 entry."""
    with record_launches() as recorded:
        kernel_cases(SM90)[case]()
    keep = {"BLOCK", "BLOCK_M", "BLOCK_N", "BLOCK_Q", "BLOCK_D", "BLOCK_P", "CHUNK", "MASK_FREE_PASS", "DOT_PRECISION"}
    return [(r.name, r.options, {k: v for k, v in r.args.items() if k in keep}) for r in recorded]


# The options each launch site passed before the move (git show HEAD~:plugins/vllm-cuda/...).
BEFORE = {
    "rms_norm": [("_rms_norm_kernel", {"num_warps": 16, "enable_fp_fusion": False}, {"BLOCK": 4096})],
    "fused_add_rms_norm": [("_fused_add_rms_norm_kernel", {"num_warps": 16, "enable_fp_fusion": False},
                            {"BLOCK": 4096})],
    "rotary_embedding": [("_rotary_kernel", {"num_warps": 4, "enable_fp_fusion": False}, {})],
    "qk_norm_rotary": [("_qk_norm_rotary_kernel", {"num_warps": 4, "enable_fp_fusion": False}, {})],
    "silu_and_mul": [("_silu_and_mul_kernel", {"num_warps": 4}, {"BLOCK": 1024})],
    "reshape_and_cache": [("_reshape_and_cache_kernel", {}, {"BLOCK_D": 128})],
    "attention_decode": [("_unified_attention_kernel", {"num_warps": 4},
                          {"BLOCK_M": 16, "BLOCK_Q": 8, "BLOCK_N": 64, "MASK_FREE_PASS": False, "DOT_PRECISION": "tf32"})],
    "attention_prefill": [("_unified_attention_kernel", {"num_warps": 4, "num_stages": 2},
                           {"BLOCK_M": 64, "BLOCK_Q": 32, "BLOCK_N": 64, "MASK_FREE_PASS": True, "DOT_PRECISION": "tf32"})],
    "attention_prefill_head256": [("_unified_attention_kernel", {"num_warps": 4, "num_stages": 2},
                                   {"BLOCK_M": 64, "BLOCK_Q": 32, "BLOCK_N": 32, "MASK_FREE_PASS": True,
                                    "DOT_PRECISION": "tf32"})],
    "attention_prefill_fp32": [("_unified_attention_kernel", {"num_warps": 4, "num_stages": 2},
                                {"BLOCK_M": 64, "BLOCK_Q": 32, "BLOCK_N": 64, "MASK_FREE_PASS": True,
                                 "DOT_PRECISION": "ieee"})],
    "attention_split_kv": [
        ("_split_kv_decode_kernel", {"num_warps": 4}, {"BLOCK_M": 16, "BLOCK_N": 64, "DOT_PRECISION": "tf32"}),
        ("_split_kv_reduce_kernel", {"num_warps": 4}, {"BLOCK_P": 16}),
    ],
    "sampler": [("_gumbel_argmax_partial_kernel", {"num_warps": 8}, {"CHUNK": 8192, "BLOCK": 2048}),
                ("_gumbel_argmax_reduce_kernel", {"num_warps": 1}, {})],
}


@pytest.mark.parametrize("case", sorted(BEFORE))
def test_sm90_launches_are_the_ones_before_the_move(case: str) -> None:
    assert launches(case) == BEFORE[case]


def test_cuda_platform_picks_its_entry_on_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    from vllm_cuda.cuda_ops import TritonOps
    from vllm_cuda.platform import CUDAPlatform

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    ops = CUDAPlatform().ops
    assert isinstance(ops, TritonOps) and ops.configs is SM90
