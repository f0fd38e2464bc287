"""Every shared Triton kernel, launched with each AMD table entry, against the native ops and the
reference attention backend (small shapes: on CPU they run in Triton's interpreter, which runs
the tile sizes, partitions, chunking and dot precision of the entry; warps and the AMD compile
options only matter to a compiler, see test_rocm_compile.py).

bfloat16 ``tl.dot`` and bfloat16 loads need a GPU under the interpreter, so attention and the
sampler run in float16 and float32 here (as in tests/plugins/cuda).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.conftest import import_or_require
from vllm_core.attention.backends.reference import ReferenceAttentionBackend
from vllm_core.platforms.ops import NATIVE_OPS
from vllm_core.testing.conformance import (
    assert_close_to_reference,
    make_attention_batch,
    rotary_cos_sin_cache,
    run_attention,
)

import_or_require("vllm_rocm", "rocm")

from vllm_cuda.kernels import (  # noqa: E402
    LaunchConfigs,
    TritonAttentionBackend,
    TritonOps,
    gumbel_argmax,
    paged_attention,
    reshape_and_cache,
)
from vllm_rocm.launch_amd import AMD_LAUNCH_CONFIGS, amd_launch_configs  # noqa: E402

ENTRIES = {**AMD_LAUNCH_CONFIGS, "amd-wave32": amd_launch_configs("gfx1100")}
"""Every entry a device can get: gfx942, gfx950, the generic fallback and its RDNA variant."""
T = 5


@pytest.fixture(params=sorted(ENTRIES))
def configs(request: pytest.FixtureRequest) -> LaunchConfigs:
    return ENTRIES[request.param]


def check(actual: Any, expected: Any, what: str) -> None:
    actual = actual if isinstance(actual, tuple) else (actual,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        assert a.shape == e.shape and a.dtype == e.dtype, f"{what} output {i}: {a.shape} {a.dtype} vs {e.shape} {e.dtype}"
        assert_close_to_reference(a.cpu(), e, f"{what} output {i}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_norms_activation_rotary_and_kv_write(
    configs: LaunchConfigs, device: torch.device, dtype: torch.dtype
) -> None:
    """The element-wise kernels through ``TritonOps`` holding the entry (as ``ROCmPlatform.ops``)."""
    ops = TritonOps(configs)
    g = torch.Generator().manual_seed(1)
    hidden, hq, hk, d = 1000, 6, 2, 64
    x = (torch.randn(T, hidden, generator=g) * 3).to(dtype)
    res = torch.randn(T, hidden, generator=g).to(dtype)
    w = (torch.randn(hidden, generator=g) * 0.5 + 1).to(dtype)
    dev = lambda t: t.to(device)  # noqa: E731
    check(ops.rms_norm(dev(x), dev(w), 1e-6), NATIVE_OPS.rms_norm(x, w, 1e-6), "rms_norm")
    check(ops.fused_add_rms_norm(dev(x), dev(res), dev(w), 1e-6),
          NATIVE_OPS.fused_add_rms_norm(x, res, w, 1e-6), "fused_add_rms_norm")
    gate_up = (torch.randn(T, 2 * hidden, generator=g) * 3).to(dtype)
    check(ops.silu_and_mul(dev(gate_up)), NATIVE_OPS.silu_and_mul(gate_up), "silu_and_mul")

    q = torch.randn(T, hq, d, generator=g).to(dtype)
    k = torch.randn(T, hk, d, generator=g).to(dtype)
    positions = torch.randint(0, 256, (T,), generator=g)
    cache = rotary_cos_sin_cache(d, 256)
    check(ops.rotary_embedding(dev(positions), dev(q), dev(k), dev(cache)),
          NATIVE_OPS.rotary_embedding(positions, q, k, cache), "rotary_embedding")
    qw, kw = (torch.randn(d, generator=g) * 0.5 + 1).to(dtype), (torch.randn(d, generator=g) * 0.5 + 1).to(dtype)
    check(ops.qk_norm_rotary(dev(positions), dev(q), dev(k), dev(qw), dev(kw), 1e-6, dev(cache)),
          NATIVE_OPS.qk_norm_rotary(positions, q, k, qw, kw, 1e-6, cache), "qk_norm_rotary")

    caches = torch.randn(2, 4, 16, hk, d, generator=g).to(dtype)
    slots = torch.randperm(64, generator=g)[:T]
    slots[1] = -1
    dev_caches = dev(caches).clone()
    ops.reshape_and_cache(dev(k), dev(k * 2), dev_caches[0], dev_caches[1], dev(slots))
    NATIVE_OPS.reshape_and_cache(k, k * 2, caches[0], caches[1], slots)
    torch.testing.assert_close(dev_caches.cpu(), caches, atol=0, rtol=0)


# A prefill chunk resuming after a cached prefix beside decodes (the unified kernel, both passes),
# and long decodes through the split-KV path (partitions of the entry's KV tile).
MIXED = {"query_lens": [1, 1, 40, 7], "context_lens": [130, 20, 70, 0], "num_padding_tokens": 2}
LONG_DECODES = {"query_lens": [1, 1, 1], "context_lens": [300, 64, 127]}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("gqa_ratio", [1, 4])
def test_attention_backend_with_the_entry(
    configs: LaunchConfigs, device: torch.device, gqa_ratio: int, dtype: torch.dtype
) -> None:
    """``TritonAttentionBackend`` given the ROCm ops takes their configs; unified kernel."""
    batch = make_attention_batch(num_heads=2 * gqa_ratio, num_kv_heads=2, head_size=64, block_size=16,
                                 dtype=dtype, seed=gqa_ratio, **MIXED)
    expected = run_attention(ReferenceAttentionBackend, NATIVE_OPS, batch.to("cpu"))
    backend = TritonAttentionBackend(batch.num_heads, batch.head_size, batch.num_kv_heads, batch.scale,
                                     TritonOps(configs), split_kv=False)
    assert backend.configs is configs
    dev = batch.to(device)
    actual = backend.forward(dev.query, dev.key, dev.value, dev.kv_cache, dev.metadata)
    n = batch.metadata.num_tokens
    assert_close_to_reference(actual[:n].cpu(), expected[:n], "triton attention output")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_split_kv_decode_with_the_entry(configs: LaunchConfigs, device: torch.device, dtype: torch.dtype) -> None:
    batch = make_attention_batch(num_heads=8, num_kv_heads=2, head_size=64, block_size=16, dtype=dtype, seed=5,
                                 **LONG_DECODES)
    expected = run_attention(ReferenceAttentionBackend, NATIVE_OPS, batch.to("cpu"))
    dev = batch.to(device)
    md = dev.metadata
    reshape_and_cache(dev.key, dev.value, dev.kv_cache[0], dev.kv_cache[1], md.slot_mapping, configs)
    actual = paged_attention(dev.query, dev.kv_cache[0], dev.kv_cache[1], md, batch.scale, split_kv=True,
                             partition_size=configs.attention.block_n, configs=configs)
    assert_close_to_reference(actual[: md.num_tokens].cpu(), expected[: md.num_tokens], "split-KV attention output")


def test_sampler_greedy_and_chunked(configs: LaunchConfigs, device: torch.device) -> None:
    """Greedy rows pick the argmax (the lowest index among ties) across the entry's vocabulary chunks."""
    vocab = configs.sampler.chunk + 300  # a second, partial chunk
    logits = torch.randn(3, vocab, generator=torch.Generator().manual_seed(4))
    logits[0, vocab - 1] = 50.0
    logits[1, [5, configs.sampler.chunk + 5]] = 50.0
    out = gumbel_argmax(logits.to(device), torch.zeros(3, device=device), seed=0, configs=configs)
    assert out.tolist() == [vocab - 1, 5, int(logits[2].argmax())]
