"""Batched bfloat16 linear layers: our AVX512-BF16 kernel or oneDNN's matmul (AMX), per shape.

On CPUs with AMX (``amx_bf16`` tiles: Sapphire Rapids and later) PyTorch's bfloat16 matmul runs
on oneDNN's AMX kernels, several times the ``vdpbf16ps`` rate of ``vc_linear_packed``; on CPUs
without it (this project's Zen 4 VM) ours is faster. Single rows (decode of one sequence) are
weight-bound, where tiles gain nothing, so only batches of ``MIN_ROWS`` rows or more are
considered. ``LinearDispatch`` decides per weight shape and row class, once, by timing both on
the first such call (the engine's profiling run and plan capture make these calls at start-up)
and keeps the faster.

``VLLM_CPU_AMX``:
  ``auto`` (default): time both where AMX is usable (CPU flags and the kernel's tile-state
  permission, ``kernels.amx_unavailable``), else always ours (no timing);
  ``off``: always ours;
  ``force``: always oneDNN for batched bfloat16 rows (tests run that path on any CPU).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vllm_core.plugins.api import ConfigError

logger = logging.getLogger(__name__)

ENV_AMX = "VLLM_CPU_AMX"
AMX_MODES = ("auto", "off", "force")
MIN_ROWS = 8
"""Fewest rows for which oneDNN is considered (below, the weight stream dominates)."""
TIMING_MAX_ROWS = 256
"""Rows timed at most (a larger call is timed on its first rows): keeps the warm-up short."""
TIMING_REPS = 3
"""Timed repetitions of each path (after one untimed call each); the minimum counts."""

OURS, ONEDNN = "ours", "onednn"


def amx_mode_from_env() -> str:
    """``VLLM_CPU_AMX`` (``auto`` when unset); any other value raises ``ConfigError``."""
    raw = os.environ.get(ENV_AMX, "").strip().lower() or "auto"
    if raw not in AMX_MODES:
        raise ConfigError(
            f"{ENV_AMX}={os.environ[ENV_AMX]!r} is not one of {', '.join(AMX_MODES)}; unset it for auto "
            "(time our kernel against oneDNN's AMX matmul where AMX is usable)"
        )
    return raw


def row_class(rows: int) -> int:
    """The power of two at or below ``rows``, capped at ``TIMING_MAX_ROWS``: calls in one class
    share a decision."""
    c = MIN_ROWS
    while c * 2 <= rows and c < TIMING_MAX_ROWS:
        c *= 2
    return c


def best_of(fn: Callable[[], object], reps: int = TIMING_REPS) -> float:
    """Seconds of the fastest of ``reps`` calls of ``fn`` after one untimed call."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


@dataclass
class LinearDispatch:
    """Which implementation runs a batched bfloat16 linear layer, decided per (out features,
    in features, ``row_class``). ``amx``: whether AMX is usable here (``auto`` times only then)."""

    mode: str = "auto"
    amx: bool = False
    choices: dict[tuple[int, int, int], str] = field(default_factory=dict)
    timings: dict[tuple[int, int, int], dict[str, float]] = field(default_factory=dict)
    """Seconds of each timed path, by key (what ``choose`` decided from)."""

    def __post_init__(self) -> None:
        if self.mode not in AMX_MODES:
            raise ConfigError(f"{ENV_AMX} mode {self.mode!r} is not one of {', '.join(AMX_MODES)}")

    @classmethod
    def from_env(cls) -> LinearDispatch:
        """The mode of ``VLLM_CPU_AMX``; AMX usable per ``kernels.amx_unavailable`` (checked
        only in ``auto``; it asks the kernel for the tile state once)."""
        mode = amx_mode_from_env()
        amx = False
        if mode == "auto":
            from vllm_cpu.kernels import amx_unavailable

            why = amx_unavailable()
            amx = why is None
            logger.info("vllm-cpu AMX: %s", "usable: batched bf16 linears timed against oneDNN" if amx else why)
        return cls(mode, amx)

    @property
    def active(self) -> bool:
        """Whether any call may go to oneDNN."""
        return self.mode == "force" or (self.mode == "auto" and self.amx)

    def choose(
        self, n: int, k: int, rows: int,
        run: dict[str, Callable[[], object]] | Callable[[], dict[str, Callable[[], object]]],
    ) -> str:
        """``OURS`` or ``ONEDNN`` for a [rows, k] x [n, k]^T bfloat16 linear; ``run`` holds (or
        makes, called only when a timing is due) a call of each path on this input (at most
        ``TIMING_MAX_ROWS`` rows), timed the first time a key is seen."""
        if rows < MIN_ROWS or not self.active:
            return OURS
        if self.mode == "force":
            return ONEDNN
        key = (n, k, row_class(rows))
        choice = self.choices.get(key)
        if choice is None:
            calls = run if isinstance(run, dict) else run()
            times = {name: best_of(fn) for name, fn in calls.items()}
            choice = min(times, key=times.__getitem__)
            self.choices[key], self.timings[key] = choice, times
            logger.info(
                "bf16 linear [%d x %d] at %d+ rows: %s (ours %.1f us, oneDNN %.1f us)", n, k, key[2], choice,
                1e6 * times[OURS], 1e6 * times[ONEDNN],
            )
        return choice
