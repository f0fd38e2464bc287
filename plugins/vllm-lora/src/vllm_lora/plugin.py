"""vllm-lora's hooks: the engine arguments, ``lora_request=``, and the runner extension."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vllm_core import hookimpl

VLLM_CORE_PLUGIN_API = ">=1.4,<2"


@hookimpl
def register_engine_args(register: Callable[[type[Any]], None]) -> None:
    from vllm_lora.config import LoRAConfig

    register(LoRAConfig)


@hookimpl
def register_request_arguments(register: Callable[[type[Any]], None]) -> None:
    from vllm_lora.request import LoRARequestArgument

    register(LoRARequestArgument)


@hookimpl
def register_runner_extensions(register: Callable[[type[Any]], None]) -> None:
    from vllm_lora.extension import LoRAExtension

    register(LoRAExtension)


@hookimpl
def register_api_routes(app: Any, engine: Any, settings: Any) -> None:
    from vllm_lora.server import add_lora_routes

    add_lora_routes(app, engine, settings)
