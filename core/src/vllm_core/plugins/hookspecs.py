"""The hooks a vllm-core plugin can implement.

Hooks register and select; the hot path uses the typed classes they return. Every
collect-all hook receives a ``register`` callback. A plugin module declares itself in its
package metadata::

    [project.entry-points.vllm_core]
    acme = "acme_vllm.plugin"

and implements any of these with ``@vllm_core.hookimpl``. The module should import nothing
heavy at top level: hooks run when the engine starts, not when ``vllm_core`` is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT_NAME = "vllm_core"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_platforms(register: Callable[[type[Any]], None]) -> None:
    """Register ``Platform`` subclasses: ``register(MyPlatform)``.

    Each platform answers ``is_available()`` (None when usable, else the reason) and has a
    ``priority``; the highest-priority available platform wins unless one is forced with
    ``--device`` / ``VLLM_CORE_DEVICE``.
    """


@hookspec
def register_attention_backends(register: Callable[[type[Any]], None]) -> None:
    """Register ``AttentionBackend`` subclasses: ``register(MyBackend)``.

    A platform picks among them by the capabilities it has and each backend requires.
    """


@hookspec
def register_samplers(register: Callable[[type[Any]], None]) -> None:
    """Register ``Sampler`` subclasses: ``register(MySampler)``.

    A platform names the sampler it prefers; the reference sampler is the oracle.
    """


@hookspec
def register_model_loaders(register: Callable[[type[Any]], None]) -> None:
    """Register ``ModelLoader`` subclasses (``safetensors``, ``gguf``, ``dummy``, ...) by their
    ``name``, which is the value of ``load_format``."""


@hookspec
def register_models(register: Callable[[str, type[Any]], None]) -> None:
    """Register model classes by Hugging Face architecture name:
    ``register("LlamaForCausalLM", LlamaForCausalLM)``."""


@hookspec
def register_tool_parsers(register: Callable[[str, type[Any]], None]) -> None:
    """Register tool-call parsers by name (``--tool-call-parser NAME``):
    ``register("hermes", HermesToolParser)``."""


@hookspec
def register_reasoning_parsers(register: Callable[[str, type[Any]], None]) -> None:
    """Register reasoning parsers by name (``--reasoning-parser NAME``):
    ``register("deepseek_r1", DeepSeekR1ReasoningParser)``."""


@hookspec
def register_runner_extensions(register: Callable[[type[Any]], None]) -> None:
    """Register ``RunnerExtension`` subclasses (``vllm_core.plugins.api``) by their ``name``:
    ``register(MyExtension)``. Each model runner asks every one to ``create`` itself for its
    engine and calls the instances at fixed points of each step (request added / finished,
    ready to schedule, prepare rows, logits masks, accept tokens, propose drafts)."""


@hookspec
def register_proposers(register: Callable[[type[Any]], None]) -> None:
    """Register speculative-decoding ``Proposer`` subclasses by their ``method`` name, the value
    of ``speculative_config={"method": ...}``: ``register(NgramProposer)``."""


@hookspec
def register_engine_args(register: Callable[[type[Any]], None]) -> None:
    """Register engine-argument sections: ``PluginConfig`` subclasses (``vllm_core.plugins.api``)
    by their ``name``: ``register(LoRAConfig)``. Their fields become ``LLM(...)`` keyword
    arguments and CLI flags; the engine carries the section in ``EngineConfig.plugins``."""


@hookspec
def register_request_arguments(register: Callable[[type[Any]], None]) -> None:
    """Register ``RequestArgument`` subclasses by their ``name``, a keyword of
    ``LLM.generate`` / ``chat`` / ``beam_search`` and ``AsyncLLM.generate``:
    ``register(LoRARequestArgument)`` handles ``lora_request=``. Each turns the value into the
    request's ``RequestExtension`` state in the front end."""


@hookspec
def register_api_routes(app: Any, engine: Any, settings: Any) -> None:
    """Add routes to the OpenAI server's FastAPI ``app`` serving ``engine`` (an ``AsyncLLM``),
    and models to ``settings.extra_models`` (a ``ServedModels``: names clients may give as
    ``model``, with the request arguments each stands for). Runs once per app, at build time."""


@hookspec
def register_multimodal_processors(register: Callable[[str, type[Any]], None]) -> None:
    """Register ``MultiModalProcessor`` subclasses (``vllm_core.plugins.api``) by Hugging Face
    architecture name: ``register("LlavaForConditionalGeneration", LlavaProcessor)``. The front
    end uses the served model's processor for prompts with ``multi_modal_data`` (image
    preprocessing, placeholder expansion); a model with none takes no images. (API 1.2)"""


@hookspec
def register_commands(cli: Any) -> None:
    """Add subcommands to the ``vllm-core`` click group: ``@cli.command() def mycmd(): ...``."""
