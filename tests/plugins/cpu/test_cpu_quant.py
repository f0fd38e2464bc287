"""GGUF quantized linear (``vc_linear_q``, AVX512-VNNI) against dequantize-then-matmul.

Random GGUF blocks of each packed type (Q4_0, Q4_1, Q8_0; Q4_K and Q6_K in their own tests,
as their rows are multiples of 256), several shapes (odd row counts, a
row count that is not a multiple of the 16-row panel), float32 and bfloat16 activations, with
and without bias, on the pool and on the caller alone.

Activations int8 (llama.cpp's Q8_0) or int8x2 (a second int8 for the remainder). Two references:
- *simulated*: the activations quantized per block of 32 as the kernel does (d = amax / 127,
  round half to even), times the dequantized weights in float64; the kernel matches to float32
  rounding: ``|y - ref| <= 1e-4 * (|W| @ |x|) + 1e-6`` (float32 activations);
- *exact*: the unquantized activations; the int8 activations cost at most half a step of
  ``amax / 127`` per element, so ``|y - ref| <= (0.5 / 127) * (|W| @ amax_blocks(x))``
  elementwise, with ``amax_blocks`` each element replaced by its block's largest magnitude
  (int8x2: half a step of amax / (127 * 254), plus 2e-5 x the float32 scale for rounding).
bfloat16 outputs are compared after rounding both sides' tolerance up by a bfloat16 ulp.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from tests.conftest import import_or_require

import_or_require("vllm_cpu", "cpu")

from vllm_core.plugins.api import ConfigError  # noqa: E402
from vllm_cpu.kernels import GGUF_BF16_ROWS, Kernels, gguf_bf16_rows_from_env, pack_weight  # noqa: E402
from vllm_cpu.ops import CPUOps  # noqa: E402
from vllm_cpu.quant import FILE_BLOCK_BYTES, attach, build_quant_weight, dequantize_rows, pack_rows  # noqa: E402

QTYPES = ("Q4_0", "Q4_1", "Q8_0")


@pytest.fixture(params=["pool", "alone"])
def ops(kernels: Kernels, request: pytest.FixtureRequest) -> Iterator[CPUOps]:
    kernels.set_pool_mode(request.param)
    yield CPUOps(kernels)
    kernels.set_pool_mode("auto")


@pytest.fixture(params=["int8", "int8x2"])
def activations(kernels: Kernels, request: pytest.FixtureRequest) -> Iterator[int]:
    """The int8 kernel's activations; bfloat16 calls stay on it at every row count."""
    kernels.set_gguf_activations(request.param)
    kernels.set_gguf_bf16_rows(0)
    yield 1 if request.param == "int8" else 2
    kernels.set_gguf_activations("int8x2")
    kernels.set_gguf_bf16_rows(GGUF_BF16_ROWS)


def random_rows(qtype: str, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """n rows of k weights in GGUF ``qtype`` blocks: random quants, scales of a trained layer's size."""
    nb, fb = k // 32, FILE_BLOCK_BYTES[qtype]
    b = np.empty((n, nb, fb), dtype=np.uint8)
    d = (rng.uniform(0.002, 0.02, (n, nb)) * rng.choice([-1, 1], (n, nb))).astype(np.float16)
    b[:, :, 0:2] = d.view(np.uint8).reshape(n, nb, 2)
    if qtype == "Q8_0":
        b[:, :, 2:] = rng.integers(-127, 128, (n, nb, 32), dtype=np.int8).view(np.uint8)
    elif qtype == "Q4_1":
        b[:, :, 2:4] = (-8 * np.abs(d.astype(np.float32))).astype(np.float16).view(np.uint8).reshape(n, nb, 2)
        b[:, :, 4:] = rng.integers(0, 256, (n, nb, 16), dtype=np.uint8)
    else:
        b[:, :, 2:] = rng.integers(0, 256, (n, nb, 16), dtype=np.uint8)
    return b.reshape(n, nb * fb)


def simulate_q8(x: np.ndarray, prec: int = 1) -> np.ndarray:
    """x [M, K] float64 after the kernel's per-block quantization (dequantized again): int8, or
    with ``prec`` 2 a second int8 for the remainder in steps of 1/254."""
    m, k = x.shape
    xb = x.astype(np.float32).reshape(m, k // 32, 32)
    d = np.abs(xb).max(axis=2, keepdims=True) / np.float32(127)
    inv = np.where(d > 0, np.float32(1) / np.where(d > 0, d, 1), 0).astype(np.float32)
    s = xb * inv
    q = np.clip(np.rint(s), -128, 127).astype(np.float64)
    if prec == 2:
        q += np.clip(np.rint((s - q.astype(np.float32)) * np.float32(254)), -128, 127) / 254
    return (q * d.astype(np.float64)).reshape(m, k)


def block_amax(x: np.ndarray) -> np.ndarray:
    m, k = x.shape
    a = np.abs(x).reshape(m, k // 32, 32).max(axis=2, keepdims=True)
    return np.broadcast_to(a, (m, k // 32, 32)).reshape(m, k)


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("m", [1, 3, 8, 13, 100])
@pytest.mark.parametrize("n,k", [(16, 32), (49, 96), (200, 576)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_linear_q_matches_dequantized(
    ops: CPUOps, activations: int, qtype: str, m: int, n: int, k: int, dtype: torch.dtype,
) -> None:
    rng = np.random.default_rng(n * 1000 + m)
    check_linear(ops, activations, qtype, random_rows(qtype, n, k, rng), m, n, k, dtype, rng)


def check_linear(
    ops: CPUOps, activations: int, qtype: str, raw: np.ndarray, m: int, n: int, k: int, dtype: torch.dtype,
    rng: np.random.Generator,
) -> None:
    """``raw`` packed and run by ``ops.linear`` against both references (module docstring)."""
    w = dequantize_rows(qtype, raw, k).astype(np.float64)
    x = torch.from_numpy(rng.standard_normal((m, k)).astype(np.float32)).to(dtype)
    bias = torch.from_numpy(rng.standard_normal(n).astype(np.float32)).to(dtype) if m % 2 else None
    weight = torch.zeros((), dtype=dtype).expand(n, k)
    attach(weight, build_quant_weight([(qtype, raw)], k))
    y = ops.linear(x, weight, bias).double().numpy()
    xf = x.double().numpy()
    b = 0 if bias is None else bias.double().numpy()
    scale = np.abs(xf) @ np.abs(w).T
    ulp = np.abs(y) * (2.0**-8 if dtype == torch.bfloat16 else 0)  # output rounding of bfloat16
    sim = simulate_q8(xf, activations) @ w.T + b
    assert (np.abs(y - sim) <= 1e-4 * scale + 1e-6 + ulp).all(), np.abs(y - sim).max()
    exact = xf @ w.T + b
    step = 0.5 / 127 if activations == 1 else 0.5 / (127 * 254)  # the largest rounding, x amax
    bound = step * (block_amax(xf) @ np.abs(w).T) * 1.001 + 2e-5 * scale + 1e-6 + ulp
    assert (np.abs(y - exact) <= bound).all(), (np.abs(y - exact) / bound).max()


def test_fused_parts_of_two_types(ops: CPUOps, activations: int) -> None:
    """A fused layer whose parts differ in type (q, k: Q4_1, v: Q8_0) writes each part's
    columns, the activations quantized once."""
    rng = np.random.default_rng(7)
    k = 64
    parts = [("Q4_1", random_rows("Q4_1", 32, k, rng)), ("Q4_1", random_rows("Q4_1", 16, k, rng)),
             ("Q8_0", random_rows("Q8_0", 16, k, rng))]
    qw = build_quant_weight(parts, k)
    assert [p.qtype for p in qw.parts] == ["Q4_1", "Q8_0"] and qw.out_features == 64
    w = np.concatenate([dequantize_rows(t, r, k) for t, r in parts]).astype(np.float64)
    weight = torch.zeros(()).expand(64, k)
    attach(weight, qw)
    x = torch.randn(5, k, generator=torch.Generator().manual_seed(0))
    y = ops.linear(x, weight).double().numpy()
    sim = simulate_q8(x.double().numpy(), activations) @ w.T
    assert np.allclose(y, sim, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("m", [GGUF_BF16_ROWS, 37, 400])
@pytest.mark.parametrize("n,k", [(16, 32), (49, 96), (200, 576)])
def test_bf16_rows_equal_dequantized_bf16_gemm(ops: CPUOps, kernels: Kernels, qtype: str, m: int, n: int, k: int) -> None:
    """Bfloat16 calls of GGUF_BF16_ROWS rows or more dequantize panel by panel and run the bf16
    GEMM: the output equals, bit for bit, the packed bf16 kernel on the weights dequantized by
    the file's formula and rounded to bf16 (what ``--quantization none`` runs). Shapes with a
    lone last 16-row panel (n = 16, 49, 200) and more rows than one tile (400)."""
    rng = np.random.default_rng(n * 7 + m)
    raw = random_rows(qtype, n, k, rng)
    weight = torch.zeros((), dtype=torch.bfloat16).expand(n, k)
    attach(weight, build_quant_weight([(qtype, raw)], k))
    x = torch.from_numpy(rng.standard_normal((m, k)).astype(np.float32)).to(torch.bfloat16)
    bias = torch.from_numpy(rng.standard_normal(n).astype(np.float32)).to(torch.bfloat16) if m % 2 else None
    y = ops.linear(x, weight, bias)
    dense = torch.from_numpy(dequantize_rows(qtype, raw, k)).to(torch.bfloat16)
    ref = torch.empty(m, n, dtype=torch.bfloat16)
    packed = pack_weight(dense)
    kernels.lib.vc_linear_packed(x.data_ptr(), k, packed.data_ptr(), None if bias is None else bias.data_ptr(),
                                 ref.data_ptr(), n, m, n, k, 1)
    assert torch.equal(y, ref), (y.float() - ref.float()).abs().max()
    # below the threshold the int8x2 kernel runs: the same values within its bounds, not the same bits
    kernels.set_gguf_bf16_rows(m + 1)
    try:
        y_int = ops.linear(x, weight, bias)
    finally:
        kernels.set_gguf_bf16_rows(GGUF_BF16_ROWS)
    # they differ by the bf16 rounding of the weights (2^-9 relative) and of the outputs (an ulp)
    scale = x.double().abs() @ dense.double().abs().T
    assert ((y_int.double() - ref.double()).abs() <= 2.0**-8 * scale + 2.0**-7 * ref.double().abs()).all()


def test_bf16_rows_then_int8_part_requantizes(ops: CPUOps, kernels: Kernels) -> None:
    """A fused layer of Q4_1 (bf16 path at many rows) and Q6_K (always int8) parts: the Q6_K part
    must quantize this call's activations, not reuse an earlier call's (the Q4_1 part quantized
    none). Each part's columns equal the part run alone."""
    rng = np.random.default_rng(11)
    k, m = 256, 40
    q41, q6k = random_rows("Q4_1", 32, k, rng), random_q6k_rows(16, k, rng)
    fused = torch.zeros((), dtype=torch.bfloat16).expand(48, k)
    attach(fused, build_quant_weight([("Q4_1", q41), ("Q6_K", q6k)], k))
    alone = torch.zeros((), dtype=torch.bfloat16).expand(16, k)
    attach(alone, build_quant_weight([("Q6_K", q6k)], k))
    ops.linear(torch.randn(m, k).to(torch.bfloat16), alone)  # leaves other activations quantized
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    y = ops.linear(x, fused)
    assert torch.equal(y[:, 32:], ops.linear(x, alone))


@pytest.mark.parametrize("value,rows", [("", GGUF_BF16_ROWS), ("0", 0), (" 64 ", 64)])
def test_bf16_rows_env(value: str, rows: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CPU_GGUF_BF16_ROWS", value)
    assert gguf_bf16_rows_from_env() == rows


@pytest.mark.parametrize("value", ["-1", "many", "1.5"])
def test_bf16_rows_env_refuses(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CPU_GGUF_BF16_ROWS", value)
    with pytest.raises(ConfigError, match="VLLM_CPU_GGUF_BF16_ROWS"):
        gguf_bf16_rows_from_env()


def test_packed_is_smaller_than_dense() -> None:
    rng = np.random.default_rng(1)
    for qtype, per_weight in (("Q4_0", 0.5625), ("Q4_1", 0.625), ("Q8_0", 1.0625)):
        qw = build_quant_weight([(qtype, random_rows(qtype, 64, 256, rng))], 256)
        assert qw.nbytes == 64 * 256 * per_weight  # the file's bytes a weight, against 4 in float32


@pytest.mark.parametrize("qtype", QTYPES)
@pytest.mark.parametrize("n", [16, 33, 200])
def test_c_packer_equals_numpy(kernels: Kernels, qtype: str, n: int) -> None:
    raw = random_rows(qtype, n, 96, np.random.default_rng(n))
    assert torch.equal(pack_rows(qtype, raw, 96, kernels.lib), pack_rows(qtype, raw, 96))


def random_q4k_rows(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """n rows of k weights in Q4_K super-blocks (144 bytes per 256): fp16 d and dmin of a trained
    layer's size, random 6-bit scales and mins, random nibbles."""
    ns = k // 256
    b = np.empty((n, ns, 144), dtype=np.uint8)
    b[:, :, 0:2] = rng.uniform(0.0002, 0.002, (n, ns)).astype(np.float16).view(np.uint8).reshape(n, ns, 2)
    b[:, :, 2:4] = rng.uniform(0.0001, 0.001, (n, ns)).astype(np.float16).view(np.uint8).reshape(n, ns, 2)
    b[:, :, 4:] = rng.integers(0, 256, (n, ns, 140), dtype=np.uint8)
    return b.reshape(n, ns * 144)


def random_q6k_rows(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """n rows of k weights in Q6_K super-blocks (210 bytes per 256): random 6-bit quants, int8
    sub-block scales, an fp16 d of a trained layer's size."""
    ns = k // 256
    b = np.empty((n, ns, 210), dtype=np.uint8)
    b[:, :, :192] = rng.integers(0, 256, (n, ns, 192), dtype=np.uint8)
    b[:, :, 192:208] = rng.integers(-128, 128, (n, ns, 16), dtype=np.int8).view(np.uint8)
    b[:, :, 208:] = rng.uniform(0.00002, 0.0002, (n, ns)).astype(np.float16).view(np.uint8).reshape(n, ns, 2)
    return b.reshape(n, ns * 210)


K_ROWS = {"Q4_K": random_q4k_rows, "Q6_K": random_q6k_rows}


@pytest.mark.parametrize("qtype", sorted(K_ROWS))
def test_k_dequantize_equals_gguf_reference(qtype: str) -> None:
    import gguf
    from gguf.quants import dequantize

    raw = K_ROWS[qtype](7, 512, np.random.default_rng(3))
    want = dequantize(raw, gguf.GGMLQuantizationType[qtype]).reshape(7, 512)
    assert np.array_equal(dequantize_rows(qtype, raw, 512), want)


@pytest.mark.parametrize("qtype", sorted(K_ROWS))
@pytest.mark.parametrize("m", [1, 8, 13])
@pytest.mark.parametrize("n,k", [(16, 256), (49, 768)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_k_linear_matches_dequantized(
    ops: CPUOps, activations: int, qtype: str, m: int, n: int, k: int, dtype: torch.dtype,
) -> None:
    """Q4_K (per block of 32 as Q4_1 with float32 d' and m') and Q6_K (bytes 0..63 with a
    float32 scale per 16) kept packed: the bounds of ``test_linear_q_matches_dequantized``."""
    rng = np.random.default_rng(n * 100 + m)
    check_linear(ops, activations, qtype, K_ROWS[qtype](n, k, rng), m, n, k, dtype, rng)
