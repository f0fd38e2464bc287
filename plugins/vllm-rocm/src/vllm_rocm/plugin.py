"""Hook implementations only; nothing heavy is imported until a hook runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vllm_core import hookimpl

VLLM_CORE_PLUGIN_API = ">=1.0,<2"
"""The vllm-core plugin API range this plugin is written for (``docs/plugin-api.md``)."""

VLLM_CUDA_KERNELS_API = ">=1.0,<2"
"""The range of ``vllm_cuda.kernels.KERNELS_API_VERSION`` this plugin is written for."""


@hookimpl
def register_platforms(register: Callable[[type[Any]], None]) -> None:
    from vllm_rocm.platform import ROCmPlatform

    register(ROCmPlatform)


@hookimpl
def register_samplers(register: Callable[[type[Any]], None]) -> None:
    from vllm_rocm.sampler import ROCmTritonSampler

    register(ROCmTritonSampler)


@hookimpl
def register_attention_backends(register: Callable[[type[Any]], None]) -> None:
    # The shared backend (vllm-cuda registers the same class; registering it here too keeps it
    # available when only this plugin is loaded, e.g. VLLM_CORE_PLUGINS=rocm).
    from vllm_cuda.kernels import TritonAttentionBackend

    register(TritonAttentionBackend)
