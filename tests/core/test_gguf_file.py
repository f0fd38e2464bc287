"""``GGUFFile`` (our header reader) gives what ``gguf.GGUFReader`` gives, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from vllm_core.model_executor.model_loader.gguf_file import GGUFFile  # noqa: E402


def _write(path: Path) -> None:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -7)
    w.add_uint16("t.u16", 65000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_float32("t.f32", 1.5)
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**40))
    w.add_float64("t.f64", 0.1)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo")
    w.add_array("t.ints", [3, 1, 4, 1, 5])
    w.add_array("t.floats", [0.5, -2.25])
    w.add_array("t.strs", ["a", "", "ü" * 3])
    w.add_array("t.empty", [])
    rng = np.random.default_rng(0)
    w.add_tensor("f32", rng.standard_normal((3, 64)).astype(np.float32))
    w.add_tensor("f16", rng.standard_normal((2, 5)).astype(np.float16))
    w.add_tensor("i32", np.arange(7, dtype=np.int32))
    w.add_tensor("bf16", gguf.quants.quantize(rng.standard_normal((2, 32)).astype(np.float32),
                                              gguf.GGMLQuantizationType.BF16),
                 raw_dtype=gguf.GGMLQuantizationType.BF16)
    w.add_tensor("q8_0", gguf.quants.quantize(rng.standard_normal((4, 64)).astype(np.float32),
                                              gguf.GGMLQuantizationType.Q8_0),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_fields_and_tensors_match_gguf_reader(tmp_path: Path) -> None:
    path = tmp_path / "all.gguf"
    _write(path)
    ours, ref = GGUFFile(str(path)), gguf.GGUFReader(str(path))
    ref_fields = {k: f.contents() for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    assert ours.fields == ref_fields
    assert ours.fields["t.str"] == "héllo" and ours.fields["t.strs"] == ["a", "", "üüü"]
    assert ours.fields["t.u64"] == 2**63 + 5 and ours.fields["t.bool"] is True
    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
    for a, b in zip(ours.tensors, ref.tensors, strict=True):
        assert a.tensor_type == b.tensor_type, a.name
        assert a.shape == tuple(b.shape.tolist()), a.name
        assert a.data.dtype == b.data.dtype and a.data.shape == b.data.shape, a.name
        assert np.array_equal(a.data, b.data), a.name
    q = next(t for t in ours.tensors if t.name == "q8_0")
    assert gguf.quants.dequantize(q.data, q.tensor_type).shape == (4, 64)


def test_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(b"GGML" + bytes(60))
    with pytest.raises(ValueError, match="not a GGUF file"):
        GGUFFile(str(path))


def test_unsupported_version(tmp_path: Path) -> None:
    path = tmp_path / "v9.gguf"
    path.write_bytes(b"GGUF" + (9).to_bytes(4, "little") + bytes(16))
    with pytest.raises(ValueError, match="version 9"):
        GGUFFile(str(path))


@pytest.mark.parametrize(
    ("keep", "match"),
    [
        (slice(None, 200), "ends inside its header|runs past the end"),  # inside the header
        (slice(None, -48), "runs past the end of the file"),  # the tensor data, past the 32-byte padding
    ],
    ids=["header", "tensor-data"],
)
def test_truncated_file(tmp_path: Path, keep: slice, match: str) -> None:
    full = tmp_path / "all.gguf"
    _write(full)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(full.read_bytes()[keep])
    with pytest.raises(ValueError, match=match):
        GGUFFile(str(cut))
