"""Arguments that plugins add to the engine and to each request.

Two seams, so that a feature such as LoRA brings its own arguments without the core knowing
their meaning:

- **engine-argument sections** (``register_engine_args``): a ``PluginConfig`` subclass whose
  fields become ``LLM(...)`` keyword arguments and CLI flags; ``build_engine_config`` sorts
  them into ``EngineConfig.plugins``.
- **request arguments** (``register_request_arguments``): a ``RequestArgument`` subclass named
  after a keyword of ``LLM.generate`` / ``chat`` / ``beam_search`` and ``AsyncLLM.generate``
  (``lora_request``); it turns the value into the request's ``RequestExtension`` state in the
  front end, where a bad value is a ``RequestError`` that leaves the engine untouched.

An argument of a plugin that is not installed is refused with the install command
(``PLUGIN_ARGUMENT_HINTS``), never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from vllm_core.extensions.state import RequestExtension

if TYPE_CHECKING:
    from vllm_core.config import EngineConfig

PLUGIN_ARGUMENT_HINTS: dict[str, str] = {
    **dict.fromkeys(
        ("enable_lora", "max_loras", "max_lora_rank", "max_cpu_loras", "lora_request", "lora_modules"),
        "vllm-lora (pip install ./plugins/vllm-lora)",
    ),
    "limit_mm_per_prompt": "vllm-multimodal (pip install ./plugins/vllm-multimodal)",
}
"""Engine and request arguments of the plugins this tree ships -> the plugin that handles them."""


def missing_plugin_hint(name: str) -> str | None:
    """The sentence telling which plugin handles ``name``, or None when no shipped plugin does."""
    plugin = PLUGIN_ARGUMENT_HINTS.get(name)
    return None if plugin is None else f"{name!r} is handled by the plugin {plugin}, which is not installed"


@dataclass(frozen=True)
class FrontendContext:
    """What a request argument may know about the engine it feeds (front-end process)."""

    config: EngineConfig
    hf_config: Any
    """The model's Hugging Face config (sizes, architecture)."""
    tokenizer: Any | None


class RequestArgument:
    """Turns one per-request keyword argument into the request's extension state.

    ``name`` is the keyword (``lora_request``). One instance serves an engine's front end;
    ``to_extensions`` runs for every request that passes the argument (not None) and raises
    ``RequestError`` for a bad value."""

    name: ClassVar[str]

    def __init__(self, context: FrontendContext) -> None:
        self.context = context

    def to_extensions(self, value: Any) -> Sequence[RequestExtension]:
        """The extension state that carries ``value`` to the engine core."""
        raise NotImplementedError


class RequestArguments:
    """Every registered request argument of one front end, by keyword."""

    def __init__(self, items: Mapping[str, RequestArgument]) -> None:
        self.items = dict(items)

    @classmethod
    def create(cls, context: FrontendContext) -> RequestArguments:
        from vllm_core.plugins import registry

        return cls({name: arg_cls(context) for name, arg_cls in registry.request_arguments().items()})

    def extensions(self, args: Mapping[str, Any]) -> list[RequestExtension]:
        """The extensions of a request's arguments (None values are left out)."""
        from vllm_core.errors import RequestError

        out: list[RequestExtension] = []
        for name, value in args.items():
            if value is None:
                continue
            arg = self.items.get(name)
            if arg is None:
                hint = missing_plugin_hint(name)
                known = ", ".join(sorted(self.items)) or "none"
                raise RequestError(
                    f"{hint}" if hint else f"unknown request argument {name!r}; registered: {known}"
                )
            out.extend(arg.to_extensions(value))
        return out
