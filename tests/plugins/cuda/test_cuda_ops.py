"""The Triton ops of ``vllm_cuda`` against the native ``Ops`` (the conformance kit's tolerances)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import pytest
import torch

from vllm_core.platforms.ops import NATIVE_OPS
from vllm_core.testing.conformance import assert_close_to_reference, rotary_cos_sin_cache

pytest.importorskip("triton")
pytest.importorskip("vllm_cuda")

from vllm_cuda.ops.activation import silu_and_mul  # noqa: E402
from vllm_cuda.ops.kv_cache import reshape_and_cache  # noqa: E402
from vllm_cuda.ops.norm import fused_add_rms_norm, rms_norm  # noqa: E402
from vllm_cuda.ops.rotary import qk_norm_rotary, rotary_embedding  # noqa: E402

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
NUM_TOKENS = 5


def run_both(op: Callable[..., Any], native: Callable[..., Any], device: torch.device, *args: Any) -> tuple[Any, Any]:
    """``op`` on copies of ``args`` on ``device``, ``native`` on CPU copies; both as tuples."""
    moved = [a.to(device).clone() if isinstance(a, torch.Tensor) else a for a in args]
    cloned = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    actual, expected = op(*moved), native(*cloned)
    as_tuple = lambda r: r if isinstance(r, tuple) else (r,)  # noqa: E731
    return as_tuple(actual), as_tuple(expected)


def assert_ops_close(actual: tuple[torch.Tensor, ...], expected: tuple[torch.Tensor, ...], what: str) -> None:
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.shape == e.shape and a.dtype == e.dtype, f"{what} output {i}: {a.shape} {a.dtype} vs {e.shape} {e.dtype}"
        assert_close_to_reference(a, e, f"{what} output {i}")


@pytest.mark.parametrize("hidden", [64, 1000])
@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm(device: torch.device, dtype: torch.dtype, hidden: int) -> None:
    g = torch.Generator().manual_seed(hidden)
    x = (torch.randn(2, NUM_TOKENS, hidden, generator=g) * 3).to(dtype)
    w = (torch.randn(hidden, generator=g) * 0.5 + 1).to(dtype)
    assert_ops_close(*run_both(rms_norm, NATIVE_OPS.rms_norm, device, x, w, 1e-6), "rms_norm")


def test_rms_norm_float32_weight_promotes(device: torch.device) -> None:
    """A float32 weight on 16-bit activations yields float32, as PyTorch's type promotion does."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(NUM_TOKENS, 96, generator=g).to(torch.float16)
    w = torch.randn(96, generator=g)
    assert_ops_close(*run_both(rms_norm, NATIVE_OPS.rms_norm, device, x, w, 1e-5), "rms_norm")


@pytest.mark.parametrize("hidden", [64, 1000])
@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_add_rms_norm(device: torch.device, interpreted: bool, dtype: torch.dtype, hidden: int) -> None:
    g = torch.Generator().manual_seed(hidden + 1)
    x = torch.randn(NUM_TOKENS, hidden, generator=g).to(dtype)
    residual = (torch.randn(NUM_TOKENS, hidden, generator=g) * 2).to(dtype)
    w = (torch.randn(hidden, generator=g) * 0.5 + 1).to(dtype)
    x_dev, residual_dev = x.to(device), residual.to(device)
    (normed, new_residual), expected = run_both(
        fused_add_rms_norm, NATIVE_OPS.fused_add_rms_norm, device, x, residual, w, 1e-5
    )
    assert_ops_close((normed, new_residual), expected, "fused_add_rms_norm")
    if not (interpreted and dtype == torch.bfloat16):  # the interpreter truncates to bfloat16
        torch.testing.assert_close(new_residual.cpu(), expected[1], atol=0, rtol=0, msg="the add must round once")
    fused_add_rms_norm(x_dev, residual_dev, w.to(device), 1e-5)
    assert torch.equal(x_dev.cpu(), x) and torch.equal(residual_dev.cpu(), residual), "inputs were modified"


@pytest.mark.parametrize("head_size", [64, 128])
@pytest.mark.parametrize("dtype", DTYPES)
def test_rotary_embedding(device: torch.device, dtype: torch.dtype, head_size: int) -> None:
    g = torch.Generator().manual_seed(head_size)
    num_heads, num_kv_heads, t = 6, 2, NUM_TOKENS
    # q and k as the model passes them: strided views of one fused QKV projection.
    qkv = torch.randn(t, (num_heads + 2 * num_kv_heads) * head_size, generator=g).to(dtype)
    sizes = [num_heads * head_size, num_kv_heads * head_size, num_kv_heads * head_size]

    def q_and_k(fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k, _ = fused.split(sizes, -1)
        return q.view(t, num_heads, head_size), k.view(t, num_kv_heads, head_size)

    positions = torch.randint(0, 512, (t,), generator=g)
    cache = rotary_cos_sin_cache(head_size, 512)
    qkv_dev = qkv.to(device)
    actual = rotary_embedding(positions.to(device), *q_and_k(qkv_dev), cache.to(device))
    assert_ops_close(actual, NATIVE_OPS.rotary_embedding(positions, *q_and_k(qkv), cache), "rotary_embedding")
    assert torch.equal(qkv_dev.cpu(), qkv), "inputs were modified"


@pytest.mark.parametrize("weight_dtype", [None, torch.float32], ids=["same", "f32"])
@pytest.mark.parametrize("head_size", [64, 128])
@pytest.mark.parametrize("dtype", DTYPES)
def test_qk_norm_rotary(device: torch.device, dtype: torch.dtype, head_size: int, weight_dtype: torch.dtype | None) -> None:
    """Per-head norm + rotary of strided q/k views equals the native rms_norm then rotary_embedding
    (float32 weights promote the outputs, as rms_norm does)."""
    g = torch.Generator().manual_seed(head_size + 7)
    num_heads, num_kv_heads, t = 6, 2, NUM_TOKENS
    qkv = (torch.randn(t, (num_heads + 2 * num_kv_heads) * head_size, generator=g) * 3).to(dtype)
    sizes = [num_heads * head_size, num_kv_heads * head_size, num_kv_heads * head_size]

    def q_and_k(fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, k, _ = fused.split(sizes, -1)
        return q.view(t, num_heads, head_size), k.view(t, num_kv_heads, head_size)

    q_w = (torch.randn(head_size, generator=g) * 0.5 + 1).to(weight_dtype or dtype)
    k_w = (torch.randn(head_size, generator=g) * 0.5 + 1).to(weight_dtype or dtype)
    positions = torch.randint(0, 512, (t,), generator=g)
    cache = rotary_cos_sin_cache(head_size, 512)
    qkv_dev = qkv.to(device)
    actual = qk_norm_rotary(positions.to(device), *q_and_k(qkv_dev), q_w.to(device), k_w.to(device), 1e-6,
                            cache.to(device))
    expected = NATIVE_OPS.qk_norm_rotary(positions, *q_and_k(qkv), q_w, k_w, 1e-6, cache)
    if weight_dtype is not None:
        # Both sides round the normalised q/k to the activations' dtype before the float32 weight:
        # the outputs are float32 but only as exact as that dtype, so they are compared in it.
        assert all(a.dtype == e.dtype == weight_dtype for a, e in zip(actual, expected))
        actual = tuple(a.to(dtype) for a in actual)
        expected = tuple(e.to(dtype) for e in expected)
    if INTERPRETED and dtype is torch.bfloat16:
        # Triton's interpreter casts float32 to bfloat16 by truncation, not round-to-nearest-even
        # (about half of random values land one ulp off), and this kernel rounds at three points
        # (normalised, weighted, rotated) as the native ops do: allow 3 ulps of the largest value.
        # On a GPU the casts round as PyTorch does and the usual tolerance applies.
        for a, e in zip(actual, expected):
            assert a.shape == e.shape and a.dtype == e.dtype
            ulp = 2.0 ** (math.floor(math.log2(float(e.abs().max()))) - 7)
            torch.testing.assert_close(a.cpu(), e, atol=3 * ulp, rtol=0)
    else:
        assert_ops_close(actual, expected, "qk_norm_rotary")
    assert torch.equal(qkv_dev.cpu(), qkv), "inputs were modified"


@pytest.mark.parametrize("d", [64, 1000])
@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_and_mul(device: torch.device, dtype: torch.dtype, d: int) -> None:
    x = (torch.randn(2, 3, 2 * d, generator=torch.Generator().manual_seed(d)) * 3).to(dtype)
    assert_ops_close(*run_both(silu_and_mul, NATIVE_OPS.silu_and_mul, device, x), "silu_and_mul")


@pytest.mark.parametrize("block_size", [8, 16])
@pytest.mark.parametrize("dtype", DTYPES)
def test_reshape_and_cache(device: torch.device, dtype: torch.dtype, block_size: int) -> None:
    g = torch.Generator().manual_seed(block_size)
    num_blocks, num_kv_heads, head_size, t = 5, 2, 64, 11
    # key and value as views of a fused QKV output (strided rows).
    kv = torch.randn(t, 2, num_kv_heads, head_size, generator=g).to(dtype)
    key, value = kv[:, 0], kv[:, 1]
    caches = torch.randn(2, num_blocks, block_size, num_kv_heads, head_size, generator=g).to(dtype)
    slots = torch.randperm(num_blocks * block_size, generator=g)[:t]
    slots[[2, 7]] = -1  # skipped rows
    kv_dev, dev_caches = kv.to(device), caches.to(device).clone()
    reshape_and_cache(kv_dev[:, 0], kv_dev[:, 1], dev_caches[0], dev_caches[1], slots.to(device))
    ref_caches = caches.clone()
    NATIVE_OPS.reshape_and_cache(key, value, ref_caches[0], ref_caches[1], slots)
    torch.testing.assert_close(dev_caches.cpu(), ref_caches, atol=0, rtol=0)

