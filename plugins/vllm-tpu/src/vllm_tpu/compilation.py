"""Compiled-graph accounting: the recompilation guard and the persistent compilation cache.

``VLLM_XLA_CHECK_RECOMPILATION=1`` (vLLM's name): once start-up has compiled every step shape,
any further compilation is an ``EngineError`` naming the step that caused it, so a shape that
escaped the buckets fails loudly instead of silently compiling for seconds on every new
shape. The count is torch-xla's ``UncachedCompile`` counter (graphs not in the in-memory
cache). ``VLLM_XLA_CACHE_PATH``: a directory for torch-xla's persistent compilation cache, so a
second start loads its executables instead of compiling them.
"""

from __future__ import annotations

import logging
import os

from vllm_core.plugins.api import EngineError

logger = logging.getLogger(__name__)

ENV_CHECK = "VLLM_XLA_CHECK_RECOMPILATION"
ENV_CACHE = "VLLM_XLA_CACHE_PATH"

_cache_path: str | None = None


def compile_count() -> int:
    """Graphs compiled in this process so far (cache misses of torch-xla's in-memory cache)."""
    import torch_xla.debug.metrics as met

    return int(met.counter_value("UncachedCompile") or 0)


def persistent_cache_hits() -> int:
    """Executables loaded from the persistent cache instead of compiled."""
    import torch_xla.debug.metrics as met

    return int(met.counter_value("PersistentCacheHit") or 0)


def init_persistent_cache() -> str | None:
    """Turn on the persistent cache at ``VLLM_XLA_CACHE_PATH`` (once per process, before the
    first computation); returns the path in use."""
    global _cache_path
    path = os.environ.get(ENV_CACHE)
    if not path or _cache_path is not None:
        if path and _cache_path is not None and path != _cache_path:
            logger.warning("%s=%s ignored: this process already uses %s", ENV_CACHE, path, _cache_path)
        return _cache_path
    import torch_xla.runtime as xr

    os.makedirs(path, exist_ok=True)
    xr.initialize_cache(path, readonly=False)
    _cache_path = path
    logger.info("XLA persistent compilation cache: %s", path)
    return path


class RecompilationGuard:
    """Counts compilations after warm-up; raises when ``VLLM_XLA_CHECK_RECOMPILATION=1``."""

    def __init__(self) -> None:
        self.enabled = os.environ.get(ENV_CHECK, "0") == "1"
        self.armed_at: int | None = None

    def arm(self) -> None:
        """Warm-up is over: from now on every compilation is a recompilation."""
        self.armed_at = compile_count()

    @property
    def recompilations(self) -> int:
        """Graphs compiled since ``arm`` (0 before it)."""
        return 0 if self.armed_at is None else compile_count() - self.armed_at

    def check(self, what: str) -> None:
        """After a step: fail if it compiled a graph (and the guard is on)."""
        if self.armed_at is None:
            return
        new = compile_count() - self.armed_at
        if not new:
            return
        self.armed_at += new
        msg = (
            f"{what} compiled {new} new XLA graph(s) after warm-up: a shape or an op sequence escaped the "
            "precompiled step shapes (a sampling feature outside the static pipeline, or a bug in the "
            "bucketing). Serving would stall for every new shape"
        )
        if self.enabled:
            raise EngineError(f"{msg}; {ENV_CHECK}=1 makes this an error (unset it to only warn)")
        logger.warning("%s (set %s=1 to make it an error)", msg, ENV_CHECK)
