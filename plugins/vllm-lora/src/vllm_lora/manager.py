"""Where adapters live: an LRU of ``max_cpu_loras`` in host memory and ``max_loras`` device slots.

``HostAdapters`` loads an adapter's tensors from disk on first use, on a thread of its own (the
request waits in the queue meanwhile, ``ready``), and keeps the most recently used ones; an adapter that a live request uses is pinned and never evicted (the cache may then
hold more than its capacity until those requests finish). ``DeviceSlots`` maps the adapters of
a step onto slots: an adapter already in a slot stays there, a new one takes a free slot or the
least recently used slot that no adapter of this step needs. The scheduler's constraint
(``MaxAdaptersConstraint``) guarantees a step never needs more slots than exist.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from vllm_lora.adapter import AdapterSpec, load_adapter

logger = logging.getLogger(__name__)

Weights = dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]


class HostAdapters:
    """Adapters in host memory by content digest, least recently used first."""

    def __init__(self, capacity: int, background: bool = True,
                 prepare: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """``background``: read adapters on a loader thread (else in ``acquire``); ``prepare``:
        applied to every tensor once loaded (pinning it, so a slot load copies without pinning
        each of its ~400 tensors on the step's path)."""
        self.capacity = capacity
        self._prepare = prepare
        self._items: OrderedDict[str, tuple[AdapterSpec, Future[Weights]]] = OrderedDict()
        self._pins: dict[str, int] = {}
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="lora-loader") if background else None

    def acquire(self, spec: AdapterSpec) -> None:
        """A request uses ``spec``: start loading it if needed (from disk), pin it, mark it recent."""
        if spec.digest not in self._items:
            self._items[spec.digest] = (spec, self._load(spec))
        self._items.move_to_end(spec.digest)
        self._pins[spec.digest] = self._pins.get(spec.digest, 0) + 1
        self._evict()

    def _load(self, spec: AdapterSpec) -> Future[Weights]:
        def run() -> Weights:
            weights = load_adapter(spec)
            if self._prepare is not None:
                weights = {key: (self._prepare(a), self._prepare(b)) for key, (a, b) in weights.items()}
            logger.info("LoRA adapter %s loaded to host memory (rank %d, %d modules)", spec.path, spec.rank,
                        len(spec.modules))
            return weights

        if self._loader is not None:
            return self._loader.submit(run)
        done: Future[Weights] = Future()
        try:
            done.set_result(run())
        except Exception as exc:  # noqa: BLE001 - re-raised by get()
            done.set_exception(exc)
        return done

    def ready(self, digest: str) -> bool:
        """Is the adapter in host memory (or did loading it fail: ``get`` raises then)?"""
        item = self._items.get(digest)
        return item is None or item[1].done()

    def release(self, digest: str) -> None:
        """A request that used ``digest`` finished."""
        left = self._pins.get(digest, 0) - 1
        if left > 0:
            self._pins[digest] = left
        else:
            self._pins.pop(digest, None)
        self._evict()

    def get(self, digest: str) -> tuple[AdapterSpec, Weights]:
        """The adapter's tensors (waits for its load; its load error is raised here)."""
        self._items.move_to_end(digest)
        spec, weights = self._items[digest]
        return spec, weights.result()

    def _evict(self) -> None:
        for digest in list(self._items):
            if len(self._items) <= self.capacity:
                return
            if digest not in self._pins and self._items[digest][1].done():
                spec, _ = self._items.pop(digest)
                logger.info("LoRA adapter %s evicted from host memory (least recently used)", spec.path)

    def __contains__(self, digest: object) -> bool:
        return digest in self._items

    @property
    def digests(self) -> list[str]:
        """Held adapters, least recently used first."""
        return list(self._items)


class DeviceSlots:
    """``num_slots`` device slots, each holding one adapter (by digest) or nothing."""

    def __init__(self, num_slots: int) -> None:
        self.slots: list[str | None] = [None] * num_slots
        self._last_used: list[int] = [0] * num_slots
        self._clock = 0

    def assign(self, needed: Iterable[str]) -> tuple[dict[str, int], list[tuple[int, str]]]:
        """Slots for the step's adapters: (digest -> slot, the (slot, digest) pairs to load)."""
        self._clock += 1
        needed = list(dict.fromkeys(needed))
        if len(needed) > len(self.slots):
            raise RuntimeError(
                f"a step needs {len(needed)} adapters but max_loras is {len(self.slots)} (the scheduler's "
                "constraint should have kept it out)"
            )
        where = {d: i for i, d in enumerate(self.slots) if d is not None}
        out: dict[str, int] = {}
        to_load: list[tuple[int, str]] = []
        wanted = set(needed)
        for digest in needed:
            if digest in where:
                out[digest] = where[digest]
        for digest in needed:
            if digest in out:
                continue
            free = [i for i, d in enumerate(self.slots) if d is None or (d not in wanted and i not in out.values())]
            slot = min(free, key=lambda i: (self.slots[i] is not None, self._last_used[i]))
            self.slots[slot] = digest
            out[digest] = slot
            to_load.append((slot, digest))
        for slot in out.values():
            self._last_used[slot] = self._clock
        return out, to_load
