"""Platform choice: the best available one by priority, or the one forced by name."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from vllm_core.errors import PlatformNotAvailableError
from vllm_core.platforms.interface import Platform
from vllm_core.platforms.ops import NATIVE_OPS, Ops

logger = logging.getLogger(__name__)

ENV_DEVICE = "VLLM_CORE_DEVICE"

# Platforms this project ships as plugin packages (folders of its source tree), for the hint.
KNOWN_PLUGIN_PLATFORMS = {
    "cpu": "vllm-cpu",
    "cuda": "vllm-cuda",
    "rocm": "vllm-rocm",
    "tpu": "vllm-tpu",
}


@dataclass(frozen=True)
class PlatformProbe:
    """One platform's answer to ``is_available``."""

    name: str
    priority: int
    distribution: str
    available: bool
    reason: str | None


def probe_platforms() -> list[PlatformProbe]:
    """Every registered platform with its availability, best first."""
    from vllm_core.plugins import registry

    probes = []
    for name, cls in registry.platforms().items():
        try:
            reason = cls.is_available()
        except Exception as exc:  # noqa: BLE001 - a crashing probe is reported, not fatal
            reason = f"probe raised {type(exc).__name__}: {exc}"
        probes.append(PlatformProbe(name, cls.priority, cls.distribution, reason is None, reason))
    probes.sort(key=lambda p: (not p.available, -p.priority, p.name))
    return probes


def resolve_platform(device: str | None = None) -> Platform:
    """Instantiate the forced platform (``device`` or ``VLLM_CORE_DEVICE``) or the best one."""
    from vllm_core.plugins import registry

    forced = device or os.environ.get(ENV_DEVICE) or None
    if forced == "auto":
        forced = None
    regs = registry.platforms()
    installed = ", ".join(regs.names())
    if forced is not None:
        if forced not in regs:
            dist = KNOWN_PLUGIN_PLATFORMS.get(forced)
            fix = (
                f"pip install ./plugins/{dist} (from the vllm-core source tree)" if dist
                else "install the plugin package that provides it"
            )
            raise PlatformNotAvailableError(
                f"platform {forced!r} is not installed; installed: {installed}; {fix}"
            )
        cls = regs.get(forced)
        reason = cls.is_available()
        if reason is not None:
            raise PlatformNotAvailableError(
                f"platform {forced!r} is installed but cannot run here: {reason}; "
                f"installed: {installed}"
            )
        platform: Platform = cls()
    else:
        best = next((p for p in probe_platforms() if p.available), None)
        if best is None:
            raise PlatformNotAvailableError(f"no platform is available; installed: {installed}")
        platform = regs.get(best.name)()
    logger.info("platform: %s", platform.describe())
    return platform


__all__ = [
    "ENV_DEVICE",
    "NATIVE_OPS",
    "Ops",
    "Platform",
    "PlatformProbe",
    "probe_platforms",
    "resolve_platform",
]
