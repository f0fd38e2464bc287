"""vllm-multimodal's hooks: processors, models and the encoder runner extension."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vllm_core import hookimpl

VLLM_CORE_PLUGIN_API = ">=1.2,<2"


@hookimpl
def register_multimodal_processors(register: Callable[[str, type[Any]], None]) -> None:
    from vllm_multimodal.processors.llava import LlavaProcessor
    from vllm_multimodal.processors.qwen2_vl import Qwen2VLProcessor

    register("LlavaForConditionalGeneration", LlavaProcessor)
    register("Qwen2VLForConditionalGeneration", Qwen2VLProcessor)


@hookimpl
def register_models(register: Callable[[str, type[Any]], None]) -> None:
    from vllm_multimodal.models.llava import LlavaForConditionalGeneration
    from vllm_multimodal.models.qwen2_vl import Qwen2VLForConditionalGeneration

    register("LlavaForConditionalGeneration", LlavaForConditionalGeneration)
    register("Qwen2VLForConditionalGeneration", Qwen2VLForConditionalGeneration)


@hookimpl
def register_runner_extensions(register: Callable[[type[Any]], None]) -> None:
    from vllm_multimodal.extension import MultiModalRunner

    register(MultiModalRunner)
