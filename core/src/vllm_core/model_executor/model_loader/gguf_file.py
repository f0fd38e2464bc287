"""A fast reader of a GGUF file's header: metadata values and tensor descriptions, with each
tensor's bytes as a view of one read-only memory map.

``gguf.GGUFReader`` builds a numpy view per part of every metadata field, ~150k of them for
SmolLM2's tokenizer (49k tokens, 48k merges), which took 2-4 s of each engine start here. This
reader walks the same layout with ``struct`` on a ``memoryview`` (~0.1 s) and gives each tensor
the array ``GGUFReader`` would (same dtype, shape and bytes), so ``gguf.quants.dequantize``
takes it unchanged.

Layout (GGUF v2/v3, little-endian; llama.cpp's ``gguf.md``)::

    magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
    kv_count x (key: string, value_type u32, value)
    tensor_count x (name: string, n_dims u32, dims u64 x n_dims, ggml_type u32, offset u64)
    padding to ``general.alignment`` (default 32), then the tensor data

A string is a u64 byte count and UTF-8 bytes; an array is an element type u32, a u64 count and
the elements.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["GGUFFile", "GGUFTensor"]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

# value type id -> (struct format, numpy dtype) for the fixed-size scalar types
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("<B", "<u1"), 1: ("<b", "<i1"), 2: ("<H", "<u2"), 3: ("<h", "<i2"), 4: ("<I", "<u4"),
    5: ("<i", "<i4"), 6: ("<f", "<f4"), 7: ("<?", "?"), 10: ("<Q", "<u8"), 11: ("<q", "<i8"),
    12: ("<d", "<f8"),
}
_STRING, _ARRAY = 8, 9

# ggml types whose data is an array of that numpy dtype; every other type is raw bytes
# ([..., bytes per row] uint8), as GGUFReader gives them
_TYPED_TENSORS: dict[int, str] = {0: "<f4", 1: "<f2", 24: "<i1", 25: "<i2", 26: "<i4", 27: "<i8", 28: "<f8"}


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor's description and bytes (a view of the file's memory map)."""

    name: str
    shape: tuple[int, ...]
    """GGUF order: fastest-varying dimension first (PyTorch's shape reversed)."""
    tensor_type: int
    """The ``ggml_type`` id (``gguf.GGMLQuantizationType``)."""
    data: np.ndarray
    """As ``gguf.GGUFReader`` gives it: typed elements for float/int types, else uint8 rows."""


class GGUFFile:
    """The header of a GGUF file: ``fields`` (key -> Python value; arrays as lists) and
    ``tensors`` in file order. The file stays memory-mapped while a tensor's ``data`` is alive.

    Raises ``ValueError`` (what was found, where) on a file that is not little-endian GGUF v2/v3
    or is cut short."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._buf = memoryview(self._map)
        self._pos = 0
        try:
            self.fields, self.tensors = self._parse()
        except struct.error as exc:
            raise ValueError(f"GGUF file {path!r} ends inside its header (at byte {self._pos}): {exc}") from exc

    # --------------------------------------------------------------------------- parsing
    def _unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self._buf, self._pos)[0]
        self._pos += struct.calcsize(fmt)
        return value

    def _string(self) -> str:
        n = self._unpack("<Q")
        end = self._pos + n
        if end > len(self._buf):
            raise struct.error(f"a string of {n} bytes runs past the end of the file")
        s = str(self._buf[self._pos:end], "utf-8")
        self._pos = end
        return s

    def _value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self._unpack(_SCALARS[vtype][0])
        if vtype == _STRING:
            return self._string()
        if vtype == _ARRAY:
            etype, count = self._unpack("<I"), self._unpack("<Q")
            if etype in _SCALARS:
                dtype = np.dtype(_SCALARS[etype][1])
                arr = np.frombuffer(self._buf, dtype=dtype, count=count, offset=self._pos)
                self._pos += count * dtype.itemsize
                return arr.tolist()
            return [self._value(etype) for _ in range(count)]
        raise ValueError(f"GGUF file {self.path!r}: unknown metadata value type {vtype} at byte {self._pos}")

    def _parse(self) -> tuple[dict[str, Any], list[GGUFTensor]]:
        if bytes(self._buf[:4]) != GGUF_MAGIC:
            raise ValueError(f"{self.path!r} is not a GGUF file (first bytes {bytes(self._buf[:4])!r}, want b'GGUF')")
        self._pos = 4
        version = self._unpack("<I")
        if version not in SUPPORTED_VERSIONS:
            hint = " (a big-endian file?)" if version & 0xFFFF == 0 else ""
            raise ValueError(
                f"GGUF file {self.path!r} has version {version}{hint}; this reader takes little-endian "
                f"versions {', '.join(map(str, SUPPORTED_VERSIONS))}"
            )
        n_tensors, n_kv = self._unpack("<Q"), self._unpack("<Q")
        fields: dict[str, Any] = {}
        for _ in range(n_kv):
            key = self._string()
            fields[key] = self._value(self._unpack("<I"))
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            n_dims = self._unpack("<I")
            dims = struct.unpack_from(f"<{n_dims}Q", self._buf, self._pos)
            self._pos += 8 * n_dims
            infos.append((name, tuple(int(d) for d in dims), self._unpack("<I"), self._unpack("<Q")))
        align = int(fields.get("general.alignment", DEFAULT_ALIGNMENT))
        if align <= 0 or align & (align - 1):
            raise ValueError(f"GGUF file {self.path!r}: general.alignment={align} is not a power of two")
        data_start = -(-self._pos // align) * align
        names: set[str] = set()
        tensors = []
        for name, dims, ttype, offset in infos:
            if name in names:
                raise ValueError(f"GGUF file {self.path!r} holds tensor {name!r} twice")
            names.add(name)
            tensors.append(GGUFTensor(name, dims, ttype, self._tensor_data(name, dims, ttype, data_start + offset)))
        return fields, tensors

    def _tensor_data(self, name: str, dims: tuple[int, ...], ttype: int, start: int) -> np.ndarray:
        n_elems = int(np.prod(dims)) if dims else 1
        np_shape = tuple(reversed(dims))
        if ttype in _TYPED_TENSORS:
            dtype = np.dtype(_TYPED_TENSORS[ttype])
            count, shape = n_elems, np_shape
        else:
            from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

            try:
                qtype = GGMLQuantizationType(ttype)
            except ValueError:
                raise ValueError(f"GGUF file {self.path!r}: tensor {name!r} has unknown ggml type {ttype}") from None
            block, type_size = GGML_QUANT_SIZES[qtype]
            if np_shape[-1] % block:
                raise ValueError(
                    f"GGUF file {self.path!r}: tensor {name!r} rows of {np_shape[-1]} are not whole "
                    f"{qtype.name} blocks of {block}"
                )
            dtype = np.dtype(np.uint8)
            count = n_elems // block * type_size
            shape = (*np_shape[:-1], np_shape[-1] // block * type_size)
        if start + count * dtype.itemsize > len(self._buf):
            raise ValueError(
                f"GGUF file {self.path!r}: tensor {name!r} ({count * dtype.itemsize} bytes at {start}) runs "
                f"past the end of the file ({len(self._buf)} bytes)"
            )
        return np.frombuffer(self._buf, dtype=dtype, count=count, offset=start).reshape(shape)
