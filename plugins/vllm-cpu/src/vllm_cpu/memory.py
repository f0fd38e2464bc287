"""Large, long-lived tensors (the KV cache, packed weights), optionally on transparent huge pages.

``VLLM_CPU_HUGE_PAGES=1`` puts them in an anonymous ``mmap`` marked ``MADV_HUGEPAGE`` before its
first touch (the kernel's default ``transparent_hugepage=madvise`` then backs it with 2 MiB
pages). Measured on the 2-core development machine: a C loop reading 660 MB ran at 30 GB/s
instead of 23 on one core, scattered 96 KB KV blocks at 24 GB/s instead of 19; but whole
workloads moved within noise (W1 float32 277/292 vs 267/288 tok/s, W3 22.4 vs 22.8 ms), while
faulting 4 GiB of huge pages in after the model had loaded took 9 s instead of 1.7 s (the kernel
compacts memory to find them). So it is off by default.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os

import torch

logger = logging.getLogger(__name__)

ENV_HUGE_PAGES = "VLLM_CPU_HUGE_PAGES"
MIN_BYTES = 4 << 20
"""Smaller tensors stay on PyTorch's allocator (a huge page would be mostly empty)."""


def has_madv_hugepage() -> bool:
    """Whether this Python and system expose ``MADV_HUGEPAGE``."""
    return hasattr(mmap, "MADV_HUGEPAGE")


def huge_pages_enabled() -> bool:
    """True when ``VLLM_CPU_HUGE_PAGES=1`` and this system has ``MADV_HUGEPAGE``."""
    if os.environ.get(ENV_HUGE_PAGES, "0").strip().lower() not in ("1", "on", "true", "yes"):
        return False
    return has_madv_hugepage()


def zeros(shape: tuple[int, ...], dtype: torch.dtype, prefault: bool = False) -> torch.Tensor:
    """A zero-filled CPU tensor, on huge pages when it is large and they are enabled. The
    memory is returned to the system when the last tensor viewing it is freed. ``prefault``
    writes every page now (start-up) instead of at first use: a KV cache's pages would otherwise
    be faulted in, 2 MiB at a time, by the steps that first write a block there."""
    numel = 1
    for n in shape:
        numel *= n
    nbytes = numel * torch.empty(0, dtype=dtype).element_size()
    if nbytes < MIN_BYTES or not huge_pages_enabled():
        return torch.zeros(shape, dtype=dtype)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        buf.madvise(mmap.MADV_HUGEPAGE)
    except OSError as exc:  # a kernel without THP: ordinary pages
        logger.debug("madvise(MADV_HUGEPAGE) failed: %s", exc)
    # frombuffer keeps the mmap object alive for as long as the tensor (or a view) lives
    out = torch.frombuffer(buf, dtype=dtype, count=numel).view(shape)
    if prefault and not _populate(out.data_ptr(), nbytes):
        out.zero_()
    return out


MADV_POPULATE_WRITE = 23
"""Linux 5.14+: fault every page of a range in, writable, without writing to it ourselves."""


def _populate(addr: int, nbytes: int) -> bool:
    """Fault ``[addr, addr + nbytes)`` in through ``madvise(MADV_POPULATE_WRITE)``; False where
    the kernel or libc cannot (the caller writes the pages instead)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.madvise(ctypes.c_void_p(addr), ctypes.c_size_t(nbytes), MADV_POPULATE_WRITE) == 0
    except (OSError, AttributeError):
        return False


def contiguous_copy(src: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of ``src`` (any strides), on huge pages when ``zeros`` would be."""
    nbytes = src.numel() * src.element_size()
    if nbytes >= MIN_BYTES and huge_pages_enabled():
        return zeros(tuple(src.shape), src.dtype).copy_(src)
    return torch.empty(src.shape, dtype=src.dtype).copy_(src)
