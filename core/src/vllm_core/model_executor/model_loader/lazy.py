"""Weights read on demand: a loader may yield a ``LazyWeight`` instead of a tensor, so that a
tensor-parallel rank reads only its shard of each weight from the file (``narrow``) and a
replicated weight is read whole (``materialize``)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class LazyWeight(Protocol):
    """A checkpoint tensor not read yet."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def narrow(self, dim: int, start: int, length: int) -> torch.Tensor:
        """Read only ``[start, start + length)`` along ``dim`` (in the loader's dtype)."""
        ...

    def materialize(self) -> torch.Tensor:
        """Read the whole tensor (in the loader's dtype)."""
        ...


Weight = torch.Tensor | LazyWeight
"""What ``ModelLoader.iter_weights`` yields per name: a tensor, or a weight read on demand."""


def materialize(weight: Weight) -> torch.Tensor:
    """The whole tensor."""
    return weight if isinstance(weight, torch.Tensor) else weight.materialize()


def narrow(weight: Weight, dim: int, start: int, length: int) -> torch.Tensor:
    """``weight[start:start + length]`` along ``dim``; a lazy weight reads only that part."""
    return weight.narrow(dim, start, length)


def shape_of(weight: Weight) -> tuple[int, ...]:
    return tuple(weight.shape)


class SafetensorsSlice:
    """A tensor of an open safetensors file, read through ``get_slice`` (only the rows or
    columns asked for leave the file). ``bytes_read`` counts what was read, per loader."""

    def __init__(self, st_slice: object, dtype: torch.dtype, counter: list[int]) -> None:
        self._slice = st_slice
        self._dtype = dtype
        self._counter = counter
        self.shape: tuple[int, ...] = tuple(st_slice.get_shape())  # type: ignore[attr-defined]

    def _read(self, index: tuple[slice, ...]) -> torch.Tensor:
        t: torch.Tensor = self._slice[index]  # type: ignore[index]
        self._counter[0] += t.numel() * t.element_size()
        return t.to(self._dtype)

    def narrow(self, dim: int, start: int, length: int) -> torch.Tensor:
        dim = dim % len(self.shape)
        index = tuple(slice(start, start + length) if d == dim else slice(None) for d in range(len(self.shape)))
        return self._read(index)

    def materialize(self) -> torch.Tensor:
        return self._read(tuple(slice(None) for _ in self.shape))
