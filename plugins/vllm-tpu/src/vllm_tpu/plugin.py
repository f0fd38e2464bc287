"""vllm-core hook implementations of vllm-tpu: registration only, nothing heavy imported."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vllm_core import hookimpl

VLLM_CORE_PLUGIN_API = ">=1.1,<2"
"""The vllm-core plugin API range this plugin is written for (``docs/plugin-api.md``): 1.1
added ``Sampler.pads_rows`` and ``Platform.warm_up``."""


@hookimpl
def register_platforms(register: Callable[[type[Any]], None]) -> None:
    from vllm_tpu.platform import TPUPlatform

    register(TPUPlatform)


@hookimpl
def register_attention_backends(register: Callable[[type[Any]], None]) -> None:
    from vllm_tpu.attention import XLAPagedAttention

    register(XLAPagedAttention)


@hookimpl
def register_samplers(register: Callable[[type[Any]], None]) -> None:
    from vllm_tpu.sampler import XLASampler

    register(XLASampler)
