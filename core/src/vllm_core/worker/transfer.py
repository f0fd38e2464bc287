"""Host-to-device copies that never make the host wait for the device.

Copying from ordinary (pageable) host memory makes CUDA synchronise the stream first, which would
stall the host behind the step in flight and defeat async scheduling. Going through pinned memory
makes the copy one more queued operation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

import numpy as np
import torch


def to_device(data: torch.Tensor | np.ndarray, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``data`` on ``device`` (as ``dtype``), copied without a host-device synchronisation."""
    t = torch.from_numpy(data) if isinstance(data, np.ndarray) else data
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    if device.type == "cpu":
        return t
    if device.type != "cuda":  # pinned memory is a CUDA notion (XLA copies from any host memory)
        return t.to(device)
    return _pinned_upload(t, device)


def _pinned_upload(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` staged in a fresh block of PyTorch's pinned-host cache, then copied without a wait.
    Not ``t.pin_memory()``: that first asks the driver whether ``t`` is pinned already
    (``is_pinned``, a pointer-attribute query), which showed as ~40 us a call on an H100 host
    under the profiler, several times in front of every verification step's launch. The cache
    keeps a block until the copy that read it has run (it records the stream's use)."""
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    host.copy_(t)
    return host.to(device, non_blocking=True)


_NUMPY_DTYPES = {torch.int64: np.int64, torch.int32: np.int32, torch.float32: np.float32}


def to_device_many(
    items: Sequence[tuple[np.ndarray, torch.dtype]], device: torch.device
) -> list[torch.Tensor]:
    """Each ``(array, dtype)`` on ``device`` as ``dtype``, like ``to_device`` for each. On CUDA
    the arrays of one dtype travel together: one pinned buffer and one copy per dtype instead of
    one per array (each pinned copy costs the host ~10-20 us, in front of every step's launch);
    the results are views of that buffer."""
    if device.type != "cuda" or any(dtype not in _NUMPY_DTYPES for _, dtype in items):
        return [to_device(a, device, dtype) for a, dtype in items]
    return pack_and_upload(items, lambda t: _pinned_upload(t, device))


def pack_and_upload(
    items: Sequence[tuple[np.ndarray, torch.dtype]], upload: Callable[[torch.Tensor], torch.Tensor]
) -> list[torch.Tensor]:
    """``to_device_many``'s packing: one host buffer per dtype, ``upload`` each once, then views
    shaped as the arrays (dtypes in ``_NUMPY_DTYPES`` only)."""
    out: list[torch.Tensor | None] = [None] * len(items)
    groups: dict[torch.dtype, list[int]] = {}
    for i, (_, dtype) in enumerate(items):
        groups.setdefault(dtype, []).append(i)
    for dtype, members in groups.items():
        np_dtype = _NUMPY_DTYPES[dtype]
        parts = [np.asarray(items[i][0], dtype=np_dtype).reshape(-1) for i in members]
        buffer = upload(torch.from_numpy(np.concatenate(parts) if len(parts) > 1 else parts[0].copy()))
        offset = 0
        for i, part in zip(members, parts):
            out[i] = buffer[offset : offset + part.size].view(items[i][0].shape)
            offset += part.size
    return cast("list[torch.Tensor]", out)
