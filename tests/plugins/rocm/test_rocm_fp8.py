"""FP8 on AMD: each architecture's e4m3 type, and e4m3fn checkpoints converted to gfx94x's
e4m3fnuz, checked on all 256 bit patterns (values, NaN, signed zero, scale doubling)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import import_or_require

import_or_require("vllm_rocm", "rocm")

from vllm_rocm.fp8 import e4m3fn_to_e4m3fnuz, fp8_checkpoint_for, fp8_dtype_for  # noqa: E402

ALL_FN = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(torch.float8_e4m3fn)
"""Every e4m3fn bit pattern, 0x00..0xFF."""


def test_fp8_dtype_per_architecture() -> None:
    assert fp8_dtype_for("gfx942") is torch.float8_e4m3fnuz
    assert fp8_dtype_for("gfx940") is torch.float8_e4m3fnuz
    assert fp8_dtype_for("gfx950") is torch.float8_e4m3fn
    assert fp8_dtype_for("gfx90a") is None  # MI200: no FP8 units


def test_every_pattern_keeps_its_value_with_the_doubled_scale() -> None:
    scale = torch.tensor(0.37)
    fnuz, new_scale = e4m3fn_to_e4m3fnuz(ALL_FN, scale)
    assert fnuz.dtype is torch.float8_e4m3fnuz and fnuz.shape == ALL_FN.shape
    assert new_scale.item() == pytest.approx(2 * 0.37)
    before = ALL_FN.float() * scale
    after = fnuz.float() * new_scale
    finite = ~before.isnan()
    assert int(finite.sum()) == 254  # e4m3fn has two NaNs (0x7F, 0xFF) and no infinities
    # exact: the same bits are worth half in fnuz, the scale is twice (a power of two: no rounding)
    assert torch.equal(after[finite], before[finite])
    assert fnuz.float()[finite].abs().max().item() == 224.0  # e4m3fn's 448, halved; 240 (0x7F) is never produced


def test_nan_and_signed_zero_patterns() -> None:
    fnuz, _ = e4m3fn_to_e4m3fnuz(ALL_FN, torch.tensor(1.0))
    bits = fnuz.view(torch.uint8)
    # e4m3fn's -0.0 (0x80) would be fnuz's NaN: it becomes +0.0
    assert bits[0x80].item() == 0x00 and fnuz[0x80].float().item() == 0.0
    # e4m3fn's NaNs (0x7F, 0xFF) would read as +-240: they become fnuz's only NaN, 0x80
    assert bits[0x7F].item() == bits[0xFF].item() == 0x80
    assert fnuz.float().isnan().nonzero().flatten().tolist() == [0x7F, 0xFF]
    # every other pattern keeps its bits
    others = [i for i in range(256) if i not in (0x7F, 0x80, 0xFF)]
    assert torch.equal(bits[others], ALL_FN.view(torch.uint8)[others])


def test_round_trip_of_a_quantised_weight() -> None:
    """A weight quantised to e4m3fn with a per-channel scale dequantises identically after conversion."""
    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    scale = w.abs().amax(dim=1, keepdim=True) / 448.0
    q = (w / scale).to(torch.float8_e4m3fn)
    q.view(torch.uint8)[0, 0] = 0x80  # a negative zero, as quantisers emit for tiny negatives
    original = q.clone()
    fnuz, fnuz_scale = e4m3fn_to_e4m3fnuz(q, scale)
    assert torch.equal(q.view(torch.uint8), original.view(torch.uint8)), "the input was modified"
    torch.testing.assert_close(fnuz.float() * fnuz_scale, q.float() * scale, atol=0, rtol=0)
    assert not fnuz.float().isnan().any()


def test_checkpoint_conversion_follows_the_architecture() -> None:
    scale = torch.tensor([0.5])
    w, s = fp8_checkpoint_for("gfx942", ALL_FN, scale)
    assert w.dtype is torch.float8_e4m3fnuz and s.item() == 1.0
    w, s = fp8_checkpoint_for("gfx950", ALL_FN, scale)
    assert w is ALL_FN and s is scale  # OCP FP8: loads as it is


def test_only_e4m3fn_converts() -> None:
    with pytest.raises(TypeError, match="float8_e5m2"):
        e4m3fn_to_e4m3fnuz(torch.zeros(2, dtype=torch.float8_e5m2), torch.tensor(1.0))
