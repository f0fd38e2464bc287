"""``MaxAdaptersConstraint``: which waiting requests may join a step under ``max_loras``.

A step holds at most ``max_loras`` distinct adapters (the device slots). A waiting request whose
adapter is already running joins freely (that fills the batch without a slot swap); a request
of a further adapter waits, keeping its place, until a slot is free: a slot frees only when no
running request uses its adapter, so slots never thrash. This is vLLM's rule, with one addition
that bounds the wait:

- vLLM lets a resident adapter keep its slot for as long as new requests of it arrive, so under
  steady traffic on ``max_loras`` adapters another adapter's requests wait indefinitely;
- here, once a refused adapter has waited ``max_lora_wait_steps`` steps it is *starving*: the
  resident adapter with the fewest running requests is *drained* (its running requests go on, its
  new ones wait), so its slot frees when those finish, and a free slot goes to a starving adapter
  (longest waiting first) before any other. A wait is then at most ``max_lora_wait_steps`` plus
  the longest remaining decode of the drained adapter's requests (bounded by ``max_model_len``).

Offline batches (everything queued at once) are scheduled exactly as by vLLM's rule: every
resident adapter's requests were admitted at the start, so draining one holds nothing back.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

from vllm_core.plugins.api import ExtensionState, InfoGauge, StepConstraint
from vllm_lora.request import AdapterRef


class MaxAdaptersConstraint(StepConstraint):
    """No step holds more than ``max_loras`` distinct adapters: a request of a further adapter
    waits until a running adapter's requests finish; ``max_wait_steps`` (0: vLLM's rule, no
    bound) bounds that wait by draining a resident adapter (see the module docstring)."""

    def __init__(self, max_loras: int, max_wait_steps: int = 0) -> None:
        self.max_loras = max_loras
        self.max_wait_steps = max_wait_steps or None
        self._step = 0
        self._active: set[str] = set()
        self._running: Counter[str] = Counter()
        self._waiting_since: dict[str, int] = {}
        """adapter -> step its requests were first refused (while some still wait)"""
        self._last_refused: dict[str, int] = {}
        self._draining: set[str] = set()

    # ------------------------------------------------------------------ the scheduler's calls
    def begin_step(self, running: Sequence[ExtensionState]) -> None:
        # the wait clock counts steps that hold slots (an engine polling with nothing running,
        # its requests still loading, frees every slot anyway)
        self._step += bool(running)
        self._running = Counter(ref.digest for ref in (ext.get(AdapterRef) for ext in running) if ref is not None)
        self._active = set(self._running)
        self._draining &= self._active  # a drained adapter with no running request left its slot
        # an adapter not refused for a while has no waiting request left (admitted, or aborted)
        stale = self._step - (self.max_wait_steps or 0) - 1
        for digest in [d for d, last in self._last_refused.items() if last < stale or d in self._active]:
            if digest not in self._draining:
                self._waiting_since.pop(digest, None)
                self._last_refused.pop(digest, None)
        self._drain_for_starving()

    def admit(self, extensions: ExtensionState) -> bool:
        ref = extensions.get(AdapterRef)
        if ref is None:
            return True
        digest = ref.digest
        if digest in self._active:
            if digest not in self._draining:
                return True
            return self._refuse(digest)
        free = self.max_loras - len(self._active)
        starving = self.starving()
        if free <= 0 or (digest not in starving and free <= len(starving)):
            return self._refuse(digest)  # no slot, or the free ones are kept for starving adapters
        self._active.add(digest)
        self._waiting_since.pop(digest, None)
        self._last_refused.pop(digest, None)
        return True

    # ------------------------------------------------------------------------------ policy
    def starving(self) -> list[str]:
        """Non-resident adapters whose requests have waited ``max_wait_steps`` or more, longest first."""
        if self.max_wait_steps is None:
            return []
        limit = self._step - self.max_wait_steps
        return sorted((d for d, since in self._waiting_since.items() if since <= limit and d not in self._active),
                      key=self._waiting_since.__getitem__)

    @property
    def draining(self) -> frozenset[str]:
        """Resident adapters that admit no new request until their running ones finish."""
        return frozenset(self._draining)

    def _refuse(self, digest: str) -> bool:
        self._waiting_since.setdefault(digest, self._step)
        self._last_refused[digest] = self._step
        return False

    def _drain_for_starving(self) -> None:
        """Drain one resident adapter per starving adapter that no free slot serves: the one with
        the fewest running requests (its slot frees soonest and the batch loses the fewest rows)."""
        need = len(self.starving()) - (self.max_loras - len(self._active)) - len(self._draining)
        candidates = sorted((d for d in self._active if d not in self._draining), key=lambda d: self._running[d])
        for digest in candidates[: max(need, 0)]:
            self._draining.add(digest)

    # ----------------------------------------------------------------------------- metrics
    def info_gauges(self, running: Sequence[ExtensionState], waiting: Sequence[ExtensionState]) -> list[InfoGauge]:
        """vLLM's ``vllm:lora_requests_info``: the adapters (by request name, each once, in queue
        order) of the running and the waiting requests, and ``max_lora``; the value is the time
        of the sample, as vLLM's ``set_to_current_time``."""

        def names(states: Sequence[ExtensionState]) -> str:
            refs = (ext.get(AdapterRef) for ext in states)
            return ",".join(dict.fromkeys(ref.name for ref in refs if ref is not None))

        labels = (("max_lora", str(self.max_loras)), ("waiting_lora_adapters", names(waiting)),
                  ("running_lora_adapters", names(running)))
        return [InfoGauge("vllm:lora_requests_info", "Running stats on lora requests.", labels, time.time())]
