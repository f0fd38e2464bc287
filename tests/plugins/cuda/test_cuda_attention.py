"""``TritonAttentionBackend`` and its kernels against the reference backend.

Batches come from the conformance kit (random paged caches with shuffled block tables, prefix
blocks shared between requests, padding tokens); outputs must agree within the kit's tolerances
and the written caches bit for bit. Under the Triton interpreter (no GPU) the grid is trimmed to
what runs in seconds; bfloat16 needs a GPU (the interpreter multiplies bfloat16 ``tl.dot``
operands as raw integers and truncates float32 -> bfloat16).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from vllm_core.attention.backends.reference import ReferenceAttentionBackend
from vllm_core.attention.metadata import AttentionMetadata
from vllm_core.platforms.ops import NATIVE_OPS
from vllm_core.testing.conformance import (
    ATTENTION_CASES,
    AttentionBatch,
    assert_close_to_reference,
    assert_kv_round_trip,
    make_attention_batch,
    run_attention,
)

pytest.importorskip("triton")
pytest.importorskip("vllm_cuda")

from vllm_cuda.attention import TritonAttentionBackend  # noqa: E402
from vllm_cuda.launch_nvidia import DEFAULT_LAUNCH_CONFIGS  # noqa: E402
from vllm_cuda.ops.kv_cache import reshape_and_cache  # noqa: E402
from vllm_cuda.ops.paged_attention import paged_attention, use_split_kv  # noqa: E402

NUM_KV_HEADS = 2
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def skip_if_unsupported(interpreted: bool, dtype: torch.dtype) -> None:
    if interpreted and dtype == torch.bfloat16:
        pytest.skip("the Triton interpreter cannot run bfloat16 tl.dot; needs a GPU")


def expected_output(batch: AttentionBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(reference output, reference cache after the KV write), on the CPU."""
    ref = batch.to("cpu")
    return run_attention(ReferenceAttentionBackend, NATIVE_OPS, ref), ref.kv_cache


def check_triton_backend(batch: AttentionBatch, device: torch.device, **backend_kwargs: Any) -> None:
    expected, expected_cache = expected_output(batch)
    dev = batch.to(device)
    impl = TritonAttentionBackend(
        batch.num_heads, batch.head_size, batch.num_kv_heads, batch.scale, NATIVE_OPS, **backend_kwargs
    )
    actual = impl.forward(dev.query, dev.key, dev.value, dev.kv_cache, dev.metadata)
    n = batch.metadata.num_tokens
    assert actual.shape == batch.query.shape and actual.dtype == batch.query.dtype
    assert_close_to_reference(actual[:n], expected[:n], "triton attention output")
    torch.testing.assert_close(dev.kv_cache.cpu(), expected_cache, atol=0, rtol=0)
    assert_kv_round_trip(batch, dev.kv_cache)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", list(ATTENTION_CASES))
@pytest.mark.parametrize("gqa_ratio", [1, 4])
def test_matches_reference(
    device: torch.device, interpreted: bool, gqa_ratio: int, case: str, dtype: torch.dtype
) -> None:
    skip_if_unsupported(interpreted, dtype)
    batch = make_attention_batch(
        num_heads=NUM_KV_HEADS * gqa_ratio, num_kv_heads=NUM_KV_HEADS, head_size=64, block_size=16,
        dtype=dtype, seed=gqa_ratio, **ATTENTION_CASES[case](16),
    )
    check_triton_backend(batch, device)


@pytest.mark.parametrize(
    ("gqa_ratio", "head_size", "block_size", "case"),
    [(3, 128, 8, "mixed_chunked"), (2, 256, 16, "prefix_hit"), (1, 16, 32, "prefill"), (8, 32, 16, "decode")],
)
def test_other_shapes(device: torch.device, gqa_ratio: int, head_size: int, block_size: int, case: str) -> None:
    """A group that is not a power of two, blocks smaller than a KV tile, the largest head size."""
    batch = make_attention_batch(
        num_heads=NUM_KV_HEADS * gqa_ratio, num_kv_heads=NUM_KV_HEADS, head_size=head_size,
        block_size=block_size, seed=head_size, **ATTENTION_CASES[case](block_size),
    )
    check_triton_backend(batch, device)


# Decode contexts around the 64-token partitions: shorter than one, a partition boundary
# (seq_len 128), several; the short rows leave empty partitions the reduce must ignore.
SPLIT_DECODE = {"query_lens": [1, 1, 1, 1], "context_lens": [20, 127, 300, 64]}
SPLIT_MIXED = {"query_lens": [1, 1, 9, 4], "context_lens": [150, 33, 70, 0], "num_padding_tokens": 2}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("lengths", [SPLIT_DECODE, SPLIT_MIXED], ids=["decode", "mixed"])
@pytest.mark.parametrize("gqa_ratio", [1, 4])
def test_split_kv_matches_reference(
    device: torch.device, interpreted: bool, gqa_ratio: int, lengths: dict[str, Any], dtype: torch.dtype
) -> None:
    """The flash-decoding path (forced, 64-token partitions) on decode rows; prefills beside them."""
    skip_if_unsupported(interpreted, dtype)
    batch = make_attention_batch(
        num_heads=NUM_KV_HEADS * gqa_ratio, num_kv_heads=NUM_KV_HEADS, head_size=64, block_size=16,
        dtype=dtype, seed=7 + gqa_ratio, **lengths,
    )
    expected, _ = expected_output(batch)
    dev = batch.to(device)
    md = dev.metadata
    reshape_and_cache(dev.key, dev.value, dev.kv_cache[0], dev.kv_cache[1], md.slot_mapping)
    actual = paged_attention(dev.query, dev.kv_cache[0], dev.kv_cache[1], md, batch.scale,
                             split_kv=True, partition_size=64)
    n = md.num_tokens
    assert_close_to_reference(actual[:n], expected[:n], "split-KV attention output")


# Contexts past several KV tiles, so the mask-free pass over whole tiles runs before the masked
# one: decodes (one aligned to the tile), a chunk resuming mid-block, a fresh prompt of many tiles.
LONG_UNIFIED = {"query_lens": [1, 1, 40, 150], "context_lens": [130, 191, 129, 0], "num_padding_tokens": 2}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("gqa_ratio", [1, 4])
@pytest.mark.parametrize("prefill_tiles", [(64, 64), (128, 32), (128, 64)], ids=lambda t: f"m{t[0]}n{t[1]}")
def test_unified_long_contexts(
    device: torch.device, interpreted: bool, gqa_ratio: int, prefill_tiles: tuple[int, int], dtype: torch.dtype,
) -> None:
    """The unified kernel (split-KV off) over long contexts, for several prefill tile shapes."""
    skip_if_unsupported(interpreted, dtype)
    from dataclasses import replace

    attention = replace(DEFAULT_LAUNCH_CONFIGS.attention, prefill_block_m=prefill_tiles[0],
                        prefill_block_n=prefill_tiles[1])
    batch = make_attention_batch(
        num_heads=NUM_KV_HEADS * gqa_ratio, num_kv_heads=NUM_KV_HEADS, head_size=64, block_size=16,
        dtype=dtype, seed=11 + gqa_ratio, **LONG_UNIFIED,
    )
    check_triton_backend(batch, device, split_kv=False, configs=replace(DEFAULT_LAUNCH_CONFIGS, attention=attention))


def test_backend_forces_split_kv(device: torch.device) -> None:
    """``split_kv=True`` on the backend takes the split path with the default partitions."""
    batch = make_attention_batch(
        num_heads=4, num_kv_heads=NUM_KV_HEADS, head_size=64, block_size=16, seed=3,
        query_lens=[1, 1, 5], context_lens=[600, 40, 12],
    )
    check_triton_backend(batch, device, split_kv=True)


def _metadata(num_decodes: int, num_prefills: int, max_seq_len: int) -> AttentionMetadata:
    n = num_decodes + num_prefills
    return AttentionMetadata(
        slot_mapping=torch.zeros(0, dtype=torch.int64), block_tables=torch.zeros(n, 1, dtype=torch.int32),
        seq_lens=torch.zeros(n, dtype=torch.int32), query_start_loc=torch.zeros(n + 1, dtype=torch.int32),
        seq_lens_cpu=[max_seq_len] * n, query_start_loc_cpu=list(range(n + 1)), max_query_len=1,
        max_seq_len=max_seq_len, num_decodes=num_decodes, block_size=16,
    )


def test_split_kv_heuristic() -> None:
    long = DEFAULT_LAUNCH_CONFIGS.attention.split_kv_min_seq_len
    assert use_split_kv(_metadata(4, 0, long), num_kv_heads=8)
    assert use_split_kv(_metadata(2, 1, long), num_kv_heads=8)
    assert not use_split_kv(_metadata(4, 0, long - 1), num_kv_heads=8)  # short contexts
    assert not use_split_kv(_metadata(64, 0, long), num_kv_heads=8)  # the unified grid is full
    assert not use_split_kv(_metadata(0, 3, long), num_kv_heads=8)  # no decode rows


def test_supports() -> None:
    assert TritonAttentionBackend.supports(128, torch.bfloat16) is None
    assert TritonAttentionBackend.supports(16, torch.float32) is None
    assert "head size 96" in (TritonAttentionBackend.supports(96, torch.float16) or "")
    assert "head size 512" in (TritonAttentionBackend.supports(512, torch.float16) or "")
    assert "float64" in (TritonAttentionBackend.supports(64, torch.float64) or "")
    assert TritonAttentionBackend.name == "triton" and TritonAttentionBackend.priority == 20
    assert TritonAttentionBackend.requires == frozenset({"triton"})
