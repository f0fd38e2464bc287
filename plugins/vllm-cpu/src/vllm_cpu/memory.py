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
from concurrent.futures import ThreadPoolExecutor

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
    """A zero-filled CPU tensor; a large one is an anonymous ``mmap`` of its own (on huge pages
    when they are enabled), returned to the system when the last tensor viewing it is freed.
    ``prefault`` maps every page now (start-up) instead of at first use, through
    ``MADV_POPULATE_WRITE`` on every core (``_populate``); ``torch.zeros`` faulted the 4 GiB KV
    cache in one 4 KiB page at a time and then wrote it, 8-9 s of an 18-20 s engine start here."""
    numel = 1
    for n in shape:
        numel *= n
    nbytes = numel * torch.empty(0, dtype=dtype).element_size()
    if nbytes < MIN_BYTES:
        return torch.zeros(shape, dtype=dtype)
    buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if huge_pages_enabled():
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


POPULATE_PIECE = 64 << 20
"""Bytes per ``madvise`` call of ``_populate`` (a multiple of 2 MiB, so huge pages stay whole)."""


def _populate(addr: int, nbytes: int) -> bool:
    """Fault ``[addr, addr + nbytes)`` in through ``madvise(MADV_POPULATE_WRITE)``, in pieces on
    one thread per usable core (ctypes releases the GIL); False where the kernel or libc cannot
    (the caller writes the pages instead). Measured on this VM, where the first touch of guest
    memory is slow: 4.2 GiB in 5.0-6.9 s on one thread, 1.6-1.9 s on two."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    madvise = libc.madvise
    madvise.argtypes, madvise.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int

    def piece(start: int) -> bool:
        return madvise(addr + start, min(POPULATE_PIECE, nbytes - start), MADV_POPULATE_WRITE) == 0

    starts = range(0, nbytes, POPULATE_PIECE)
    from vllm_cpu.platform import available_cores

    threads = min(available_cores(), len(starts), 8)
    if threads <= 1:
        return all(piece(s) for s in starts)
    with ThreadPoolExecutor(threads, thread_name_prefix="vllm-cpu-populate") as pool:
        return all(pool.map(piece, starts))


def contiguous_copy(src: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of ``src`` (any strides), on huge pages when ``zeros`` would be."""
    nbytes = src.numel() * src.element_size()
    if nbytes >= MIN_BYTES and huge_pages_enabled():
        return zeros(tuple(src.shape), src.dtype).copy_(src)
    return torch.empty(src.shape, dtype=src.dtype).copy_(src)
