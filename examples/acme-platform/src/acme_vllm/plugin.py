"""vllm-core hook implementations of acme-vllm: registration only, nothing heavy imported.

vllm-core imports this module (the ``vllm_core`` entry point in ``pyproject.toml``) whenever it
builds its plugin manager, also for ``vllm-core --help``; the classes are imported inside the
hooks, which run only when the engine asks for platforms or attention backends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vllm_core import hookimpl

VLLM_CORE_PLUGIN_API = ">=1.0,<2"
"""The vllm-core plugin API range this plugin is written for: every 1.x core loads it, a 2.0
core refuses it with a message instead of breaking at run time."""


@hookimpl
def register_platforms(register: Callable[[type[Any]], None]) -> None:
    from acme_vllm.platform import AcmePlatform

    register(AcmePlatform)


@hookimpl
def register_attention_backends(register: Callable[[type[Any]], None]) -> None:
    from acme_vllm.attention import AcmeAttention

    register(AcmeAttention)
