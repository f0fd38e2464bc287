"""Large, long-lived tensors (the KV cache, packed weights), optionally on transparent huge pages.

``VLLM_CPU_HUGE_PAGES=1`` puts them in an anonymous ``mmap`` marked ``MADV_HUGEPAGE`` before its
first touch (the kernel's default ``transparent_hugepage=madvise`` then backs it with 2 MiB
pages). Measured on the 2-core development machine: a C loop reading 660 MB ran at 30 GB/s
instead of 23 on one core, scattered 96 KB KV blocks at 24 GB/s instead of 19; but whole
workloads moved within noise (W1 float32 277/292 vs 267/288 tok/s, W3 22.4 vs 22.8 ms), while
faulting 4 GiB of huge pages in after the model had loaded took 9 s instead of 1.7 s (the kernel
compacts memory to find them). So it is off by default.

``Reservation`` sets memory aside before it is needed and faults it in on background threads:
the cpu platform's KV cache, while the model loads.
"""

from __future__ import annotations

import ctypes
import logging
import math
import mmap
import os
import threading
from collections.abc import Callable
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


def _madvise() -> Callable[[int, int, int], int] | None:
    """libc's ``madvise(addr, length, advice)`` through ctypes (which releases the GIL), None
    where there is no libc."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    madvise = libc.madvise
    madvise.argtypes, madvise.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return madvise


def _populate_threads(pieces: int) -> int:
    from vllm_cpu.platform import available_cores

    return max(1, min(available_cores(), pieces, 8))


def _populate_piece(madvise: Callable[[int, int, int], int] | None, addr: int, nbytes: int, start: int) -> bool:
    """Fault in the ``POPULATE_PIECE`` of ``[addr, addr + nbytes)`` that begins at ``start``;
    False where the kernel or libc cannot (the caller writes the pages instead)."""
    size = min(POPULATE_PIECE, nbytes - start)
    return madvise is not None and madvise(addr + start, size, MADV_POPULATE_WRITE) == 0


def _populate(addr: int, nbytes: int) -> bool:
    """Fault ``[addr, addr + nbytes)`` in through ``madvise(MADV_POPULATE_WRITE)``, in pieces on
    one thread per usable core (ctypes releases the GIL); False where the kernel or libc cannot
    (the caller writes the pages instead). Measured on this VM, where the first touch of guest
    memory is slow: 4.2 GiB in 5.0-6.9 s on one thread, 1.6-1.9 s on two."""
    madvise = _madvise()
    if madvise is None:
        return False

    def piece(start: int) -> bool:
        return _populate_piece(madvise, addr, nbytes, start)

    starts = range(0, nbytes, POPULATE_PIECE)
    threads = _populate_threads(len(starts))
    if threads <= 1:
        return all(piece(s) for s in starts)
    with ThreadPoolExecutor(threads, thread_name_prefix="vllm-cpu-populate") as pool:
        return all(pool.map(piece, starts))


MADV_DONTNEED = 4
ALIGN = 64
"""Byte alignment of the tensors a ``Reservation`` hands out (a cache line)."""


class Reservation:
    """Zeroed memory set aside before it is needed: an anonymous mapping of ``nbytes`` whose
    pages background threads fault in, front to back, while the caller does other work (the
    engine loads the model). ``take`` hands out tensors from the front, each waiting only until
    its own pages are in; ``release`` stops the faulting and returns the pages nobody took.

    Why: faulting the 4 GiB KV cache in took 3-9 s of every engine start on this VM (its first
    touch of guest memory is slow) while loading the model kept one of the two cores busy;
    done during the load, most of it is off the start-up path.
    """

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self._map = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if huge_pages_enabled():
            try:
                self._map.madvise(mmap.MADV_HUGEPAGE)
            except OSError as exc:
                logger.debug("madvise(MADV_HUGEPAGE) failed: %s", exc)
        self._addr = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        self._taken = 0
        self._pieces = -(-nbytes // POPULATE_PIECE)
        self._done = [False] * self._pieces
        self._ready = 0  # bytes from the start that are faulted in
        self._next_piece = 0
        self._stop = False
        self._cond = threading.Condition()
        self._madvise = _madvise()
        self._threads = [
            threading.Thread(target=self._fault_pieces, name=f"vllm-cpu-kv-populate-{i}", daemon=True)
            for i in range(_populate_threads(self._pieces))
        ]
        for t in self._threads:
            t.start()

    def _fault_pieces(self) -> None:
        while True:
            with self._cond:
                if self._stop or self._next_piece >= self._pieces:
                    return
                i = self._next_piece
                self._next_piece += 1
            start = i * POPULATE_PIECE
            if not _populate_piece(self._madvise, self._addr, self.nbytes, start):
                # no MADV_POPULATE_WRITE: touch the pages
                ctypes.memset(self._addr + start, 0, min(POPULATE_PIECE, self.nbytes - start))
            with self._cond:
                self._done[i] = True
                while self._ready < self.nbytes and self._done[self._ready // POPULATE_PIECE]:
                    self._ready = min(self._ready + POPULATE_PIECE, self.nbytes)
                self._cond.notify_all()

    @property
    def ready_bytes(self) -> int:
        """Bytes from the start faulted in so far."""
        with self._cond:
            return self._ready

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
        """A zeroed tensor from the next free bytes, once its pages are in (None: not enough left)."""
        numel = math.prod(shape)
        nbytes = numel * dtype.itemsize
        with self._cond:
            offset = -(-self._taken // ALIGN) * ALIGN
            if self._stop or offset + nbytes > self.nbytes:
                return None
            self._taken = offset + nbytes
            while self._ready < self._taken and any(t.is_alive() for t in self._threads):
                self._cond.wait(0.1)
        # frombuffer keeps the mapping alive for as long as the tensor (or a view) lives
        return torch.frombuffer(self._map, dtype=dtype, count=numel, offset=offset).view(shape)

    def release(self) -> None:
        """Stop faulting pages in and give back the pages past what was taken (the tensors
        handed out stay valid; the mapping goes when the last of them does)."""
        with self._cond:
            self._stop = True
        for t in self._threads:
            t.join()
        page = mmap.PAGESIZE
        start = -(-self._taken // page) * page
        if start < self.nbytes and self._madvise is not None:
            self._madvise(self._addr + start, self.nbytes - start, MADV_DONTNEED)


def contiguous_copy(src: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of ``src`` (any strides), on huge pages when ``zeros`` would be."""
    nbytes = src.numel() * src.element_size()
    if nbytes >= MIN_BYTES and huge_pages_enabled():
        return zeros(tuple(src.shape), src.dtype).copy_(src)
    return torch.empty(src.shape, dtype=src.dtype).copy_(src)
