"""The C kernels of vllm-cpu against PyTorch: linear layers on packed weights, paged decode
attention, the fused elementwise ops at decode and at prefill sizes (row-parallel), and the pool
(every chunk once, errors raised, grad/inference mode carried), each with the pool always used
and with the caller alone."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import import_or_require
from vllm_core.attention.metadata import AttentionMetadata
from vllm_core.platforms.ops import NATIVE_OPS
from vllm_core.testing.conformance import silu_mlp_inputs

import_or_require("vllm_cpu", "cpu")

from vllm_cpu.attention import decode_attention, paged_decode_attention  # noqa: E402
from vllm_cpu.kernels import Kernels, pack_weight  # noqa: E402
from vllm_cpu.ops import CPUOps  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.bfloat16: {"rtol": 1.6e-2, "atol": 1e-2}}


@pytest.fixture(params=["pool", "alone"])
def mode(kernels: Kernels, request: pytest.FixtureRequest) -> Iterator[str]:
    kernels.set_pool_mode(request.param)
    yield request.param
    kernels.set_pool_mode("auto")


@pytest.fixture
def ops(kernels: Kernels, mode: str) -> CPUOps:
    return CPUOps(kernels)


# ----------------------------------------------------------------------------------- linear
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("m", [1, 5, 12, 13, 64, 300])
@pytest.mark.parametrize("n,k", [(96, 64), (100, 70), (33, 576)])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_matches_f_linear(ops: CPUOps, dtype_name: str, m: int, n: int, k: int, bias: bool) -> None:
    dtype = DTYPES[dtype_name]
    g = torch.Generator().manual_seed(m * 1000 + n + k)
    x = torch.randn(m, k, generator=g).to(dtype)
    w = (torch.randn(n, k, generator=g) / k**0.5).to(dtype)
    b = torch.randn(n, generator=g).to(dtype) if bias else None
    got = ops.linear(x, w, b)
    assert got.dtype == dtype and got.shape == (m, n)
    if dtype == torch.bfloat16 and k % 2:
        assert ops.packed_weight(w) is None  # bf16 pairs need an even K: F.linear ran
    else:
        assert ops.packed_weight(w) is not None
    want = F.linear(x.double(), w.double(), None if b is None else b.double())
    torch.testing.assert_close(got.double(), want, **TOL[dtype])


def test_linear_takes_batched_and_strided_inputs(ops: CPUOps) -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 32, generator=g)
    x3 = torch.randn(2, 5, 32, generator=g)
    torch.testing.assert_close(ops.linear(x3, w), F.linear(x3, w), rtol=1e-5, atol=1e-5)
    wide = torch.randn(7, 80, generator=g)
    x = wide[:, 8:40]  # rows 80 apart
    torch.testing.assert_close(ops.linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)


def test_pack_layout() -> None:
    w = torch.arange(40 * 6, dtype=torch.float32).view(40, 6)
    p = pack_weight(w)
    assert p.shape == (2, 6, 32)
    assert torch.equal(p[0, 3, 5], w[5, 3]) and torch.equal(p[1, 2, 7], w[39, 2])
    assert torch.all(p[1, :, 8:] == 0)  # padding past N
    wb = w.bfloat16()
    pb = pack_weight(wb)
    assert pb.shape == (2, 3, 32, 2)
    assert torch.equal(pb[1, 1, 3, 1], wb[35, 3])


def test_packing_stops_at_the_budget(kernels: Kernels, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CPU_PACK_MAX_BYTES", str(64 * 64 * 4))
    ops = CPUOps(kernels)
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    assert ops.packed_weight(a) is not None
    assert ops.packed_weight(b) is None
    x = torch.randn(3, 64)
    torch.testing.assert_close(ops.linear(x, b), F.linear(x, b))


def test_packed_copy_follows_the_weight(ops: CPUOps) -> None:
    w = torch.randn(32, 16)
    first = ops.packed_weight(w)
    assert ops.packed_weight(w) is first
    del w  # a new tensor at a recycled id must not get the old packing
    w2 = torch.randn(32, 16)
    torch.testing.assert_close(ops.linear(torch.ones(1, 16), w2), F.linear(torch.ones(1, 16), w2))


# --------------------------------------------------------------------------- decode attention
def _decode_case(dtype: torch.dtype, hq: int, hk: int, d: int, bs: int, lens: list[int], seed: int):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    max_blocks = max(-(-n // bs) for n in lens) + 1
    nb = max(64, len(lens) * max_blocks)
    kc = torch.randn(nb, bs, hk, d, generator=g).to(dtype)
    vc = torch.randn(nb, bs, hk, d, generator=g).to(dtype)
    tables = torch.randperm(nb, generator=g)[: len(lens) * max_blocks].view(len(lens), max_blocks).int()
    q = torch.randn(len(lens), hq, d, generator=g).to(dtype)
    b = len(lens)
    md = AttentionMetadata(
        slot_mapping=torch.zeros(b, dtype=torch.int64), block_tables=tables,
        seq_lens=torch.tensor(lens, dtype=torch.int32), query_start_loc=torch.arange(b + 1, dtype=torch.int32),
        seq_lens_cpu=lens, query_start_loc_cpu=list(range(b + 1)), max_query_len=1, max_seq_len=max(lens),
        num_decodes=b, block_size=bs,
    )
    return q, kc, vc, md


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize(
    "hq,hk,d,bs,lens",
    [
        (9, 3, 64, 16, [1, 5, 37, 200]),  # SmolLM2's heads
        # enough sequences for whole-sequence tasks (every KV head in one task)
        (9, 3, 64, 16, [1, 5, 37, 200, 16, 17, 3, 128, 64, 90]),
        (8, 2, 128, 32, [40, 1, 77, 32, 33, 64, 5, 9, 100]),
        (4, 2, 16, 8, [1, 19]),
        (8, 8, 128, 16, [16, 17, 31, 64]),
        (4, 1, 64, 32, [33, 95]),
        (6, 2, 40, 16, [9, 33]),  # head size not a multiple of 16: the generic path
    ],
)
def test_paged_decode_attention_matches_sdpa(
    kernels: Kernels, mode: str, dtype_name: str, hq: int, hk: int, d: int, bs: int, lens: list[int]
) -> None:
    dtype = DTYPES[dtype_name]
    q, kc, vc, md = _decode_case(dtype, hq, hk, d, bs, lens, seed=hq + d + bs)
    out = torch.full((len(lens), hq, d), float("nan"), dtype=dtype)
    paged_decode_attention(kernels.lib, q, kc, vc, md, len(lens), d**-0.5, out)
    want = decode_attention(q, kc, vc, md.block_tables, md.seq_lens, max(lens), d**-0.5)
    torch.testing.assert_close(out.float(), want, **TOL[dtype])


# --------------------------------------------------------------------------------- elementwise
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("tokens", [1, 7, 200])
def test_elementwise_ops_match_native(ops: CPUOps, dtype_name: str, tokens: int) -> None:
    dtype = DTYPES[dtype_name]
    g = torch.Generator().manual_seed(tokens)
    hidden = 96
    x = torch.randn(tokens, hidden, generator=g).to(dtype)
    res = torch.randn(tokens, hidden, generator=g).to(dtype)
    w = (torch.randn(hidden, generator=g) * 0.5 + 1).to(dtype)
    torch.testing.assert_close(ops.rms_norm(x, w, 1e-6), NATIVE_OPS.rms_norm(x, w, 1e-6), **TOL[dtype])
    got = ops.fused_add_rms_norm(x.clone(), res.clone(), w, 1e-6)
    want = NATIVE_OPS.fused_add_rms_norm(x, res, w, 1e-6)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **TOL[dtype])
    gu = torch.randn(tokens, 2 * hidden, generator=g).to(dtype)
    torch.testing.assert_close(ops.silu_and_mul(gu), NATIVE_OPS.silu_and_mul(gu), **TOL[dtype])

    hq, hk, d = 6, 2, 64
    qkv = torch.randn(tokens, (hq + 2 * hk) * d, generator=g).to(dtype)
    q, k, v = qkv.split([hq * d, hk * d, hk * d], -1)
    positions = torch.randint(0, 300, (tokens,), generator=g)
    inv = 1.0 / 10000 ** (torch.arange(0, d, 2).float() / d)
    freqs = torch.outer(torch.arange(300).float(), inv)
    cache = torch.cat((freqs.cos(), freqs.sin()), -1)
    want_q, want_k = NATIVE_OPS.rotary_embedding(positions, q.reshape(tokens, hq, d), k.reshape(tokens, hk, d), cache)
    got_q, got_k = ops.rotary_embedding(positions, q.reshape(tokens, hq, d), k.reshape(tokens, hk, d), cache)
    torch.testing.assert_close(got_q, want_q, **TOL[dtype])
    torch.testing.assert_close(got_k, want_k, **TOL[dtype])

    kc = torch.zeros(40, 8, hk, d, dtype=dtype)
    vc = torch.zeros_like(kc)
    slots = torch.randperm(320, generator=g)[:tokens]
    slots[0] = -1  # skipped
    kr, vr = got_k, v.reshape(tokens, hk, d)
    ops.reshape_and_cache(kr, vr, kc, vc, slots)
    kc_ref, vc_ref = torch.zeros_like(kc), torch.zeros_like(vc)
    NATIVE_OPS.reshape_and_cache(kr, vr, kc_ref, vc_ref, slots)
    assert torch.equal(kc, kc_ref) and torch.equal(vc, vc_ref)


# -------------------------------------------------------------------------------------- pool
def test_parallel_runs_every_chunk_once_and_raises(kernels: Kernels, mode: str) -> None:
    seen: list[int] = []
    kernels.parallel(seen.append, 50)
    assert sorted(seen) == list(range(50))

    def boom(i: int) -> None:
        if i == 3:
            raise ValueError("chunk 3")

    with pytest.raises(ValueError, match="chunk 3"):
        kernels.parallel(boom, 8)


def test_parallel_chunks_see_the_callers_inference_mode(kernels: Kernels) -> None:
    kernels.set_pool_mode("pool")
    try:
        modes: list[bool] = []
        with torch.inference_mode():
            kernels.parallel(lambda i: modes.append(torch.is_inference_mode_enabled()), 16)
        assert modes == [True] * 16
    finally:
        kernels.set_pool_mode("auto")


def test_pool_mode_is_checked(kernels: Kernels) -> None:
    from vllm_core.errors import ConfigError

    with pytest.raises(ConfigError, match="VLLM_CPU_POOL"):
        kernels.set_pool_mode("sometimes")
    stats = kernels.pool_stats()
    assert set(stats) == {"jobs", "stalls", "busy_checks", "solo", "others"}


def test_kernels_off_leaves_pytorch_ops() -> None:
    code = (
        "import torch; from vllm_cpu.platform import CPUPlatform; p = CPUPlatform(); p.setup(); "
        "print(p.ops.kernels is None, torch.get_num_threads())"
    )
    env = {**os.environ, "VLLM_CPU_KERNELS": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", str(len(os.sched_getaffinity(0)))]


# ----------------------------------------------------------------------------- gated MLP
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("m", [1, 64, 191, 192, 400])
@pytest.mark.parametrize("bias", [False, True])
def test_silu_mlp_equals_the_three_ops(ops: CPUOps, dtype_name: str, m: int, bias: bool) -> None:
    """Row tiles (192 rows) through gate/up, SiLU-and-mul and down give the three ops' result
    to the bit: same kernels, same rounding points; rows past a tile boundary included."""
    dtype = DTYPES[dtype_name]
    hidden = 96
    x, w_gu, w_d, b_gu, b_d = silu_mlp_inputs(m, hidden, 130, dtype, bias, seed=m)
    fused = ops.silu_mlp(x, w_gu, w_d, b_gu, b_d)
    separate = ops.linear(ops.silu_and_mul(ops.linear(x, w_gu, b_gu)), w_d, b_d)
    assert fused.shape == (m, hidden) and fused.dtype == dtype
    assert torch.equal(fused, separate)
    native = NATIVE_OPS.silu_mlp(x, w_gu, w_d, b_gu, b_d)
    torch.testing.assert_close(fused.float(), native.float(), **TOL[dtype])


def test_silu_mlp_takes_leading_dims_and_strided_rows(ops: CPUOps) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 32, generator=g)
    w_gu, w_d = torch.randn(80, 32, generator=g) / 32**0.5, torch.randn(32, 40, generator=g) / 40**0.5
    out = ops.silu_mlp(x, w_gu, w_d)
    assert out.shape == (2, 5, 32)
    torch.testing.assert_close(out, NATIVE_OPS.silu_mlp(x, w_gu, w_d), rtol=1e-5, atol=1e-5)
    strided = torch.randn(7, 64, generator=g)[:, ::2]
    torch.testing.assert_close(ops.silu_mlp(strided, w_gu, w_d), NATIVE_OPS.silu_mlp(strided, w_gu, w_d),
                               rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------- argmax
@pytest.mark.parametrize("vocab", [1, 15, 16, 17, 1000, 49152])
def test_argmax_rows_match_torch(kernels: Kernels, mode: str, vocab: int) -> None:
    from vllm_cpu.sampler import CPUSampler

    g = torch.Generator().manual_seed(vocab)
    x = torch.randn(9, vocab, generator=g)
    x[1] = float("-inf")                                   # a fully masked row: index 0
    x[2] = torch.round(x[2])                               # many ties: the first one wins
    x[3, vocab // 2] = x[3, vocab - 1] = float("inf")      # +inf twice: the first
    x[4, vocab // 3] = float("nan")                        # NaN counts as largest (torch's rule)
    x[5] = 0.0
    x[6, -1] = 50.0                                        # the maximum in the tail lanes
    sampler = CPUSampler(kernels)
    assert torch.equal(sampler.argmax(x), x.argmax(dim=-1))
    strided = torch.randn(5, vocab + 7, generator=g)[:, :vocab]
    assert torch.equal(sampler.argmax(strided), strided.argmax(dim=-1))


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_lora_rows_do_not_depend_on_their_batch(ops: CPUOps, dtype_name: str) -> None:
    """``vc_lora`` groups the rows by adapter (a chunk shares each load of A and B among up to 4
    rows of one slot): every row's result is bit for bit the one it gets alone, whatever rows of
    its adapter share its chunk; base rows (-1) are untouched."""
    dtype = getattr(torch, dtype_name)
    g = torch.Generator().manual_seed(3)
    t, k, r, slots, sizes = 29, 72, 16, 3, (40, 24, 24)
    n = sum(sizes)
    a = (torch.randn(len(sizes), slots, r, k, generator=g) / k**0.5).to(dtype)
    a[:, 2, 8:] = 0  # slot 2 holds a rank-8 adapter, zero-padded to 16
    b = (torch.randn(slots, r, n, generator=g) / r**0.5).to(dtype)
    b[2, 8:] = 0
    x = torch.randn(t, k, generator=g).to(dtype)
    out0 = torch.randn(t, n, generator=g).to(dtype)
    token_slots = torch.tensor([(i * 7) % 4 - 1 for i in range(t)], dtype=torch.int64)  # -1, 2, 1, 0, ...
    scaling = torch.tensor([0.5, 2.0, 1.25])
    together = out0.clone()
    ops.add_lora(together, x, a, b, sizes, token_slots, scaling)
    for i in range(t):
        alone = out0[i : i + 1].clone()
        ops.add_lora(alone, x[i : i + 1], a, b, sizes, token_slots[i : i + 1], scaling)
        assert torch.equal(together[i], alone[0]), f"row {i} (slot {int(token_slots[i])})"
    base = token_slots < 0
    assert base.any() and torch.equal(together[base], out0[base])
    assert not torch.equal(together[~base], out0[~base])
