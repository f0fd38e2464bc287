"""vllm-core hook implementations of the CPU plugin: registration only, nothing heavy imported."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vllm_core import hookimpl

VLLM_CORE_PLUGIN_API = ">=1.4,<2"
"""The vllm-core plugin API range this plugin is written for (``docs/plugin-api.md``)."""


@hookimpl
def register_platforms(register: Callable[[type[Any]], None]) -> None:
    from vllm_cpu.platform import CPUPlatform

    register(CPUPlatform)


@hookimpl
def register_attention_backends(register: Callable[[type[Any]], None]) -> None:
    from vllm_cpu.attention import CPUAttentionBackend

    register(CPUAttentionBackend)


@hookimpl
def register_samplers(register: Callable[[type[Any]], None]) -> None:
    from vllm_cpu.sampler import CPUSampler

    register(CPUSampler)


@hookimpl
def register_engine_args(register: Callable[[type[Any]], None]) -> None:
    from vllm_cpu.gguf_quant import QuantizationConfig

    register(QuantizationConfig)


@hookimpl
def register_runner_extensions(register: Callable[[type[Any]], None]) -> None:
    from vllm_cpu.gguf_quant import GGUFQuantExtension

    register(GGUFQuantExtension)
