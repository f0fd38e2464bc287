"""GGUF quantized weights kept packed: Q4_0, Q4_1 and Q8_0 blocks repacked for ``vc_linear_q``.

A GGUF file stores a linear weight ``[N, K]`` row by row in blocks of 32 weights with fp16
scales (Q4_0: ``d, 16 bytes of nibbles``; Q4_1: ``d, m, nibbles``; Q8_0: ``d, 32 int8``).
``pack_rows`` reorders those bytes, once, into the panels of 16 output rows that the C kernel
streams (see ``vc_linear_q`` in ``csrc/cpu_kernels.c`` for the byte layout): the same bits, no
re-quantization, and about the file's size in memory (Q4_1: 0.625 bytes a weight against 4 in
float32). ``QuantWeight`` is what a layer's weight carries (``QUANT_ATTR``): its parts (a fused
layer's q/k/v or gate/up; one part when they share a format) and their packed bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vllm_cpu.memory import contiguous_copy

QUANT_ATTR = "_vllm_cpu_quant"
"""Attribute of a weight tensor holding its ``QuantWeight`` (``CPUOps.linear`` runs on it)."""

QR, QK = 16, 32
"""Output rows per panel, weights per block (``QR``, ``QK`` of the C kernel)."""

QTYPES: dict[str, int] = {"Q4_0": 0, "Q4_1": 1, "Q8_0": 2, "Q4_K": 3, "Q6_K": 4}
"""GGUF block formats the kernel runs on -> its ``qtype`` code."""

FILE_BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34, "Q4_K": 18}
"""File bytes per 32 weights (Q4_K: a super-block of 256 weights is 144 bytes; Q6_K: 210,
not a whole number per 32)."""
SUPERBLOCK_BYTES = {"Q4_K": 144, "Q6_K": 210}
"""File bytes per super-block of 256 weights of the K formats."""
PACKED_BLOCK_BYTES = {"Q4_0": 288, "Q4_1": 320, "Q8_0": 544, "Q4_K": 384, "Q6_K": 640}
"""Bytes of one block of 32 k for 16 rows in the packed layout (Q4_K: nibbles, then float32
scales and offsets, as the products of its 6-bit sub-block scales and fp16 super-scales are not
fp16 numbers; Q6_K: the quants as bytes 0..63, then float32 scales of each half of 16)."""
QK_K = 256
"""Weights per super-block of the K formats."""


def q6k_blocks(raw: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q6_K rows [N, K / 256 * 210] -> per block of 32: quants [N, K/32, 32] (0..63) and the
    float32 scales d sc of its first and last 16 weights [N, K/32] each, w = d sc (q - 32)
    (ggml's ``dequantize_row_q6_K``: ql 128 bytes, qh 64, int8 scales 16, fp16 d)."""
    n, ns = raw.shape[0], k // QK_K
    b = raw.reshape(n, ns, 210)
    ql, qh = b[:, :, 0:128].reshape(n, ns, 2, 64), b[:, :, 128:192].reshape(n, ns, 2, 32)
    sc = b[:, :, 192:208].copy().view(np.int8).astype(np.float32)  # [n, ns, 16]: one per 16 weights
    d = b[:, :, 208:210].copy().view(np.float16).astype(np.float32)  # [n, ns, 1]
    lo, hi = ql[..., :32], ql[..., 32:]
    q = np.stack([  # each [n, ns, 2, 32]: weights 128 h + 32 j + l for j = 0..3
        (lo & 0xF) | ((qh & 3) << 4), (hi & 0xF) | (((qh >> 2) & 3) << 4),
        (lo >> 4) | (((qh >> 4) & 3) << 4), (hi >> 4) | (((qh >> 6) & 3) << 4),
    ], axis=3).reshape(n, ns * 8, 32)
    scale = (d * sc).reshape(n, ns * 8, 2)
    return q, scale[:, :, 0], scale[:, :, 1]


def q4k_blocks(raw: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Q4_K rows [N, K / 256 * 144] -> per block of 32: quants [N, K/32, 32] (0..15), float32
    scale d' and offset m' [N, K/32] with w = d' q + m' (ggml's ``dequantize_row_q4_K``: d' = d
    sc, m' = -dmin mn, sc and mn the sub-block's 6-bit values)."""
    n, ns = raw.shape[0], k // QK_K
    b = raw.reshape(n, ns, 144)
    d = b[:, :, 0:2].copy().view(np.float16).astype(np.float32)  # [n, ns, 1]
    dmin = b[:, :, 2:4].copy().view(np.float16).astype(np.float32)
    sc_raw = b[:, :, 4:16].astype(np.uint8)
    sc = np.empty((n, ns, 8), dtype=np.float32)
    mn = np.empty((n, ns, 8), dtype=np.float32)
    sc[:, :, :4] = sc_raw[:, :, 0:4] & 63
    mn[:, :, :4] = sc_raw[:, :, 4:8] & 63
    sc[:, :, 4:] = (sc_raw[:, :, 8:12] & 0xF) | ((sc_raw[:, :, 0:4] >> 6) << 4)
    mn[:, :, 4:] = (sc_raw[:, :, 8:12] >> 4) | ((sc_raw[:, :, 4:8] >> 6) << 4)
    qs = b[:, :, 16:].reshape(n, ns, 4, 32)
    q = np.stack([qs & 0xF, qs >> 4], axis=3).reshape(n, ns * 8, 32)  # sub-block 2c: low, 2c + 1: high
    return q, (d * sc).reshape(n, ns * 8), (-(dmin * mn)).reshape(n, ns * 8)


def _nibble_panels(q: np.ndarray) -> np.ndarray:
    """q [P*16, nb, 32] uint8 (0..15) -> [P, nb, 256] bytes: vector v, byte 4j + t holds row j's
    k = 8v + t (low nibble) and k = 8v + 4 + t (high nibble)."""
    rows, nb = q.shape[:2]
    q = q.reshape(rows // QR, QR, nb, 4, 2, 4)  # [P, j, nb, v, h, t]
    byte = q[:, :, :, :, 0, :] | (q[:, :, :, :, 1, :] << 4)  # [P, j, nb, v, t]
    return np.ascontiguousarray(byte.transpose(0, 2, 3, 1, 4)).reshape(rows // QR, nb, 256)


def _scale_panels(s: np.ndarray) -> np.ndarray:
    """s [P*16, nb, w] bytes (one fp16 (w = 2) or float32 (w = 4) per row and block) -> [P, nb,
    16 w]: the 16 rows' values."""
    rows, nb, w = s.shape
    return np.ascontiguousarray(s.reshape(rows // QR, QR, nb, w).transpose(0, 2, 1, 3)).reshape(rows // QR, nb, 16 * w)


def pack_rows(qtype: str, raw: np.ndarray, k: int, lib: object | None = None) -> torch.Tensor:
    """``raw`` [N, K / 32 * file block bytes] (a GGUF tensor's rows, uint8) -> the packed uint8
    tensor of ``vc_linear_q``; rows padded with zero blocks to a multiple of 16. With ``lib``
    (the kernels' library) the C packer does it on the pool (~20x faster than numpy here)."""
    if qtype not in QTYPES:
        raise ValueError(f"GGUF type {qtype!r} has no packed kernel; packed types: {', '.join(QTYPES)}")
    if k % (QK_K if qtype in SUPERBLOCK_BYTES else QK):
        raise ValueError(f"{k} input features is not a multiple of the {qtype} block size")
    n = raw.shape[0]
    row_bytes = k // QK_K * SUPERBLOCK_BYTES[qtype] if qtype in SUPERBLOCK_BYTES else k // QK * FILE_BLOCK_BYTES[qtype]
    if raw.shape[1] != row_bytes:
        raise ValueError(f"a {qtype} row of {k} weights is {row_bytes} bytes, got {raw.shape[1]}")
    nb, fb = k // QK, FILE_BLOCK_BYTES.get(qtype, 0)
    rows = -(-n // QR) * QR
    if qtype == "Q4_K":
        return _pack_q4k(raw, n, k, rows)
    if qtype == "Q6_K":
        return _pack_q6k(raw, n, k, rows)
    if lib is not None:
        src = np.ascontiguousarray(raw)
        packed = contiguous_copy(torch.empty(rows // QR * nb * PACKED_BLOCK_BYTES[qtype], dtype=torch.uint8))
        if lib.vc_pack_q(src.ctypes.data, src.strides[0], n, k, QTYPES[qtype], packed.data_ptr()):  # type: ignore[attr-defined]
            raise RuntimeError(f"vc_pack_q refused {qtype} with K={k}")
        return packed
    blocks = np.zeros((rows, nb, fb), dtype=np.uint8)
    blocks[:n] = raw.reshape(n, nb, fb)
    out = np.empty((rows // QR, nb, PACKED_BLOCK_BYTES[qtype]), dtype=np.uint8)
    if qtype == "Q8_0":
        q = (blocks[:, :, 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)  # [rows, nb, 32]
        q = q.reshape(rows // QR, QR, nb, 8, 4).transpose(0, 2, 3, 1, 4)  # [P, nb, g, j, t]
        out[:, :, :512] = np.ascontiguousarray(q).reshape(rows // QR, nb, 512)
        out[:, :, 512:] = _scale_panels(blocks[:, :, 0:2])
    else:
        qs = blocks[:, :, 4:] if qtype == "Q4_1" else blocks[:, :, 2:]  # [rows, nb, 16]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=2)  # weights 0..15 low, 16..31 high
        out[:, :, :256] = _nibble_panels(q)
        out[:, :, 256:288] = _scale_panels(blocks[:, :, 0:2])
        if qtype == "Q4_1":
            out[:, :, 288:320] = _scale_panels(blocks[:, :, 2:4])
    return contiguous_copy(torch.from_numpy(out.reshape(-1)))


def _pack_q4k(raw: np.ndarray, n: int, k: int, rows: int) -> torch.Tensor:
    """Q4_K rows in the packed layout of ``vc_linear_q``'s qtype 3 (numpy; no C packer)."""
    q, dd, mm = q4k_blocks(raw, k)
    nb = k // QK
    pad = rows - n
    if pad:
        q = np.concatenate([q, np.zeros((pad, nb, 32), dtype=q.dtype)])
        dd = np.concatenate([dd, np.zeros((pad, nb), dtype=np.float32)])
        mm = np.concatenate([mm, np.zeros((pad, nb), dtype=np.float32)])
    out = np.empty((rows // QR, nb, PACKED_BLOCK_BYTES["Q4_K"]), dtype=np.uint8)
    out[:, :, :256] = _nibble_panels(q.astype(np.uint8))
    for lo, values in ((256, dd), (320, mm)):
        out[:, :, lo:lo + 64] = _scale_panels(values.astype(np.float32).view(np.uint8).reshape(rows, nb, 4))
    return contiguous_copy(torch.from_numpy(out.reshape(-1)))


def _pack_q6k(raw: np.ndarray, n: int, k: int, rows: int) -> torch.Tensor:
    """Q6_K rows in the packed layout of ``vc_linear_q``'s qtype 4 (numpy; no C packer)."""
    q, sa, sb = q6k_blocks(raw, k)
    nb = k // QK
    pad = rows - n
    if pad:  # zero rows: q = 32 (w = 0) and scale 0
        q = np.concatenate([q, np.full((pad, nb, 32), 32, dtype=q.dtype)])
        sa = np.concatenate([sa, np.zeros((pad, nb), dtype=np.float32)])
        sb = np.concatenate([sb, np.zeros((pad, nb), dtype=np.float32)])
    out = np.empty((rows // QR, nb, PACKED_BLOCK_BYTES["Q6_K"]), dtype=np.uint8)
    qp = q.astype(np.uint8).reshape(rows // QR, QR, nb, 8, 4).transpose(0, 2, 3, 1, 4)  # [P, nb, g, j, t]
    out[:, :, :512] = np.ascontiguousarray(qp).reshape(rows // QR, nb, 512)
    for lo, values in ((512, sa), (576, sb)):
        out[:, :, lo:lo + 64] = _scale_panels(values.astype(np.float32).view(np.uint8).reshape(rows, nb, 4))
    return contiguous_copy(torch.from_numpy(out.reshape(-1)))


def dequantize_rows(qtype: str, raw: np.ndarray, k: int) -> np.ndarray:
    """The float32 [N, K] weights of GGUF rows (the formula of each format; tests' reference)."""
    if qtype == "Q6_K":
        q, sa, sb = q6k_blocks(raw, k)
        scale = np.stack([sa, sb], axis=2).repeat(16, axis=2)  # [N, K/32, 32]
        return (scale * (q.astype(np.float32) - 32)).reshape(raw.shape[0], k).astype(np.float32)
    if qtype == "Q4_K":
        q, dd, mm = q4k_blocks(raw, k)
        return (dd[:, :, None] * q + mm[:, :, None]).reshape(raw.shape[0], k).astype(np.float32)
    n, nb, fb = raw.shape[0], k // QK, FILE_BLOCK_BYTES[qtype]
    b = raw.reshape(n, nb, fb)
    d = b[:, :, 0:2].copy().view(np.float16).astype(np.float32)  # [n, nb, 1]
    if qtype == "Q8_0":
        q = b[:, :, 2:].view(np.int8).astype(np.float32)
        return (d * q).reshape(n, k)
    qs = b[:, :, 4:] if qtype == "Q4_1" else b[:, :, 2:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=2).astype(np.float32)
    if qtype == "Q4_1":
        m = b[:, :, 2:4].copy().view(np.float16).astype(np.float32)
        return (d * q + m).reshape(n, k)
    return (d * (q - 8)).reshape(n, k)


@dataclass(frozen=True)
class QuantPart:
    """Rows ``[offset, offset + rows)`` of a layer's output, packed in one GGUF format."""

    qtype: str
    offset: int
    rows: int
    packed: torch.Tensor

    @property
    def code(self) -> int:
        return QTYPES[self.qtype]


@dataclass(frozen=True)
class QuantWeight:
    """A linear weight ``[out_features, in_features]`` kept in GGUF block formats."""

    out_features: int
    in_features: int
    parts: tuple[QuantPart, ...]
    precision: int = 0
    """Activations: 1 int8, 2 int8x2, 0 the kernels' setting (``VLLM_CPU_GGUF_ACTIVATIONS``)."""

    @property
    def nbytes(self) -> int:
        return sum(p.packed.numel() for p in self.parts)

    @property
    def qtypes(self) -> tuple[str, ...]:
        return tuple(p.qtype for p in self.parts)


def quantized(weight: torch.Tensor) -> QuantWeight | None:
    """The ``QuantWeight`` a weight carries, or None."""
    return getattr(weight, QUANT_ATTR, None)


def build_quant_weight(parts: list[tuple[str, np.ndarray]], k: int, lib: object | None = None) -> QuantWeight:
    """``parts``: (GGUF type, rows [n_i, row bytes]) in output order; consecutive parts of one
    type are packed together (one kernel call); ``lib``: pack in C (``pack_rows``)."""
    merged: list[tuple[str, list[np.ndarray]]] = []
    for qtype, raw in parts:
        if merged and merged[-1][0] == qtype:
            merged[-1][1].append(raw)
        else:
            merged.append((qtype, [raw]))
    out: list[QuantPart] = []
    offset = 0
    for qtype, raws in merged:
        raw = raws[0] if len(raws) == 1 else np.concatenate(raws, axis=0)
        out.append(QuantPart(qtype, offset, raw.shape[0], pack_rows(qtype, raw, k, lib)))
        offset += raw.shape[0]
    return QuantWeight(offset, k, tuple(out))


def attach(weight: torch.Tensor, qw: QuantWeight) -> None:
    """Make ``CPUOps.linear`` run ``weight``'s layer on ``qw``."""
    if tuple(weight.shape) != (qw.out_features, qw.in_features):
        raise ValueError(
            f"quantized weight is [{qw.out_features}, {qw.in_features}], the layer's {tuple(weight.shape)}"
        )
    setattr(weight, QUANT_ATTR, qw)


def linear_q(lib: object, x: torch.Tensor, qw: QuantWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """y = x @ W^T (+ bias) on the packed parts: one ``vc_linear_q`` call a part, writing its
    columns of y; the activations are quantized once (``x_ready`` for the later parts)."""
    n, k = qw.out_features, qw.in_features
    x2 = x if x.dim() == 2 else x.reshape(-1, k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    m = x2.shape[0]
    y = torch.empty(m, n, dtype=x.dtype)
    es = x.element_size()
    bf16 = x.dtype == torch.bfloat16
    for i, part in enumerate(qw.parts):
        rc = lib.vc_linear_q(  # type: ignore[attr-defined]
            x2.data_ptr(), x2.stride(0), part.packed.data_ptr(),
            None if bias is None else bias.data_ptr() + part.offset * es,
            y.data_ptr() + part.offset * es, n, m, part.rows, k, part.code, bf16, i > 0, qw.precision,
        )
        if rc:
            raise RuntimeError(f"vc_linear_q refused {part.qtype} with K={k}")
    return y if x.dim() == 2 else y.view(*x.shape[:-1], n)
