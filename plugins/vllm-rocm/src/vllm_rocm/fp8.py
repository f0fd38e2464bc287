"""FP8 on AMD GPUs: which 8-bit float each architecture computes in, and converting OCP e4m3fn
checkpoints to the e4m3fnuz type of gfx94x.

CDNA3 (gfx940/941/942: MI300X, MI325X) computes in ``float8_e4m3fnuz``: exponent bias 8 (one
more than e4m3fn's 7), largest value 240, no negative zero and no infinities, and a single NaN,
the bit pattern 0x80 (e4m3fn's negative zero). CDNA4 (gfx950: MI350X, MI355X) computes in OCP
``float8_e4m3fn`` like NVIDIA, so checkpoints load unchanged there.

The same bits read as e4m3fnuz are worth exactly half their e4m3fn value (the bias is one
larger; subnormals too), so a checkpoint converts without rounding by keeping the bits and
doubling the scales: ``fnuz_bits * (2 * scale) == fn_value * scale``. Two patterns need care:
0x80 (-0.0 in e4m3fn) would read as NaN, so it becomes 0x00; e4m3fn's NaNs (0x7F, 0xFF) would
read as +-240, so they become e4m3fnuz's NaN, 0x80.
"""

from __future__ import annotations

import torch

FNUZ_ARCHS = frozenset({"gfx940", "gfx941", "gfx942"})
"""CDNA3: FP8 compute in the ``fnuz`` types."""
OCP_FP8_ARCHS = frozenset({"gfx950", "gfx1200", "gfx1201"})
"""CDNA4 and RDNA4: FP8 compute in the OCP types (``float8_e4m3fn``)."""

_FN_NEG_ZERO = -128  # 0x80 as int8
_FNUZ_NAN = -128  # 0x80 as int8
_FN_NAN_MAGNITUDE = 0x7F  # S.1111.111: e4m3fn's NaN, either sign


def fp8_dtype_for(arch: str) -> torch.dtype | None:
    """The FP8 (e4m3) dtype ``arch`` computes in natively; None where it has no FP8 units."""
    if arch in FNUZ_ARCHS:
        return torch.float8_e4m3fnuz
    if arch in OCP_FP8_ARCHS:
        return torch.float8_e4m3fn
    return None


def e4m3fn_to_e4m3fnuz(weight: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An e4m3fn tensor and its dequantisation scale(s) -> the same values as e4m3fnuz and scales.

    Bits are kept (no rounding); -0.0 becomes +0.0, NaN stays NaN, and every scale doubles, so
    ``result.float() * new_scale == weight.float() * scale`` wherever the input is not NaN.
    The input is not modified.
    """
    if weight.dtype != torch.float8_e4m3fn:
        raise TypeError(f"expected a torch.float8_e4m3fn tensor, got {weight.dtype}; "
                        "only OCP e4m3fn checkpoints convert to e4m3fnuz")
    bits = weight.view(torch.int8).clone()
    nan = (bits.view(torch.uint8) & 0x7F) == _FN_NAN_MAGNITUDE
    bits[bits == _FN_NEG_ZERO] = 0
    bits[nan] = _FNUZ_NAN
    return bits.view(torch.float8_e4m3fnuz), scale * 2.0


def fp8_checkpoint_for(arch: str, weight: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An e4m3fn checkpoint tensor (and scale) in the form ``arch`` computes in: converted to
    e4m3fnuz on gfx94x, unchanged elsewhere."""
    if fp8_dtype_for(arch) == torch.float8_e4m3fnuz and weight.dtype == torch.float8_e4m3fn:
        return e4m3fn_to_e4m3fnuz(weight, scale)
    return weight, scale
