"""Attention backend choice by capability, never by platform name."""

from __future__ import annotations

import torch

from vllm_core.attention.backend import AttentionBackend
from vllm_core.errors import ConfigError


def select_backend(
    capabilities: frozenset[str], head_size: int, dtype: torch.dtype, forced: str | None = None
) -> type[AttentionBackend]:
    """Highest-priority registered backend that the capabilities allow and that supports
    ``head_size`` and ``dtype``; ``forced`` names one (still checked)."""
    from vllm_core.plugins import registry

    reg = registry.attention_backends()
    candidates = [reg.get(forced)] if forced else [cls for _, cls in reg.items()]
    rejected = []
    usable = []
    for cls in candidates:
        missing = cls.requires - capabilities
        if missing:
            rejected.append(f"{cls.name}: needs {sorted(missing)}")
            continue
        why = cls.supports(head_size, dtype)
        if why is not None:
            rejected.append(f"{cls.name}: {why}")
            continue
        usable.append(cls)
    if not usable:
        raise ConfigError(
            f"no attention backend for head_size={head_size}, dtype={dtype} on capabilities "
            f"{sorted(capabilities)}; rejected: {'; '.join(rejected) or 'none registered'}"
        )
    return max(usable, key=lambda c: c.priority)
