"""Hook implementations only; nothing heavy is imported until a hook runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vllm_core import hookimpl

VLLM_CORE_PLUGIN_API = ">=1.0,<2"
"""The vllm-core plugin API range this plugin is written for (``docs/plugin-api.md``)."""


@hookimpl
def register_platforms(register: Callable[[type[Any]], None]) -> None:
    from vllm_cuda.platform import CUDAPlatform

    register(CUDAPlatform)


@hookimpl
def register_samplers(register: Callable[[type[Any]], None]) -> None:
    from vllm_cuda.sampler import TritonSampler

    register(TritonSampler)


@hookimpl
def register_attention_backends(register: Callable[[type[Any]], None]) -> None:
    from vllm_cuda.attention import TritonAttentionBackend

    register(TritonAttentionBackend)
