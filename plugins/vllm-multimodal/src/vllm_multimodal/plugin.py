"""vllm-multimodal's hooks: processors, models and the encoder runner extension.

Processors and models are registered as small factories that import their module when called,
so an engine serving a text-only model never imports the image code (the registries only need
a callable: ``factory(hf_config, ctx)``, ``factory(model_path, hf_config, tokenizer)``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from vllm_core import hookimpl

VLLM_CORE_PLUGIN_API = ">=1.2,<2"

PROCESSORS = {
    "LlavaForConditionalGeneration": ("vllm_multimodal.processors.llava", "LlavaProcessor"),
    "Qwen2VLForConditionalGeneration": ("vllm_multimodal.processors.qwen2_vl", "Qwen2VLProcessor"),
}
MODELS = {
    "LlavaForConditionalGeneration": ("vllm_multimodal.models.llava", "LlavaForConditionalGeneration"),
    "Qwen2VLForConditionalGeneration": ("vllm_multimodal.models.qwen2_vl", "Qwen2VLForConditionalGeneration"),
}


def lazy(module: str, name: str) -> Callable[..., Any]:
    """A factory that imports ``module.name`` on its first call and forwards the arguments."""

    def make(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    make.__name__ = make.__qualname__ = name
    make.__module__ = module
    return make


@hookimpl
def register_multimodal_processors(register: Callable[[str, Any], None]) -> None:
    for arch, (module, name) in PROCESSORS.items():
        register(arch, lazy(module, name))


@hookimpl
def register_models(register: Callable[[str, Any], None]) -> None:
    for arch, (module, name) in MODELS.items():
        register(arch, lazy(module, name))


@hookimpl
def register_runner_extensions(register: Callable[[type[Any]], None]) -> None:
    from vllm_multimodal.extension import MultiModalRunner

    register(MultiModalRunner)
