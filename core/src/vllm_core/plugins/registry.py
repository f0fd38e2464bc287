"""Typed registries filled from the hooks: name -> class, with errors that list the choices."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from vllm_core.errors import PluginError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object; a missing name raises ``error_cls`` listing what is registered."""

    def __init__(self, kind: str, error_cls: type[Exception] = KeyError, hint: str = "") -> None:
        self.kind = kind
        self.error_cls = error_cls
        self.hint = hint
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"{self.kind} registered with an invalid name {name!r}")
        if name in self._items and self._items[name] is not item:
            raise PluginError(
                f"{self.kind} {name!r} registered twice ({self._items[name]!r} and {item!r})"
            )
        self._items[name] = item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            choices = ", ".join(sorted(self._items)) or "none"
            hint = f"; {self.hint}" if self.hint else ""
            raise self.error_cls(f"unknown {self.kind} {name!r}; registered: {choices}{hint}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())

    def names(self) -> list[str]:
        return sorted(self._items)


_cache: dict[str, Registry[Any]] = {}


def clear_caches() -> None:
    _cache.clear()


def _collect(hook: str, kind: str, error_cls: type[Exception], hint: str, by_attr: bool) -> Registry[Any]:
    if hook in _cache:
        return _cache[hook]
    from vllm_core.plugins.manager import get_plugin_manager

    reg: Registry[Any] = Registry(kind, error_cls, hint)
    if by_attr:

        def register(cls: Any) -> None:
            name = getattr(cls, "name", None)
            if not isinstance(name, str):
                raise PluginError(f"{kind} {cls!r} has no string attribute 'name'")
            reg.register(name, cls)

        getattr(get_plugin_manager().hook, hook)(register=register)
    else:
        getattr(get_plugin_manager().hook, hook)(register=reg.register)
    _cache[hook] = reg
    return reg


def platforms() -> Registry[Any]:
    from vllm_core.errors import PlatformNotAvailableError

    return _collect("register_platforms", "platform", PlatformNotAvailableError, "", True)


def attention_backends() -> Registry[Any]:
    from vllm_core.errors import ConfigError

    return _collect("register_attention_backends", "attention backend", ConfigError, "", True)


def samplers() -> Registry[Any]:
    from vllm_core.errors import ConfigError

    return _collect("register_samplers", "sampler", ConfigError, "", True)


def model_loaders() -> Registry[Any]:
    from vllm_core.errors import ConfigError

    return _collect("register_model_loaders", "load_format", ConfigError, "", True)


def models() -> Registry[Any]:
    from vllm_core.errors import ModelLoadError

    return _collect(
        "register_models", "model architecture", ModelLoadError,
        "install a plugin that registers it through register_models", False,
    )


def tool_parsers() -> Registry[Any]:
    from vllm_core.errors import ConfigError

    return _collect("register_tool_parsers", "tool parser", ConfigError, "", False)


def reasoning_parsers() -> Registry[Any]:
    from vllm_core.errors import ConfigError

    return _collect("register_reasoning_parsers", "reasoning parser", ConfigError, "", False)


def runner_extensions() -> Registry[Any]:
    from vllm_core.errors import ConfigError

    return _collect("register_runner_extensions", "runner extension", ConfigError, "", True)


def multimodal_processors() -> Registry[Any]:
    from vllm_core.errors import ConfigError

    return _collect("register_multimodal_processors", "multimodal processor", ConfigError, "", False)


def engine_args() -> Registry[Any]:
    from vllm_core.errors import ConfigError

    return _collect("register_engine_args", "engine-argument section", ConfigError, "", True)


def request_arguments() -> Registry[Any]:
    from vllm_core.errors import RequestError

    return _collect("register_request_arguments", "request argument", RequestError, "", True)


def proposers() -> Registry[Any]:
    from vllm_core.errors import ConfigError

    return _collect_by(
        "register_proposers", "speculative decoding method", ConfigError,
        "install the plugin that provides it", "method",
    )


def _collect_by(hook: str, kind: str, error_cls: type[Exception], hint: str, attr: str) -> Registry[Any]:
    if hook in _cache:
        return _cache[hook]
    from vllm_core.plugins.manager import get_plugin_manager

    reg: Registry[Any] = Registry(kind, error_cls, hint)

    def register(cls: Any) -> None:
        name = getattr(cls, attr, None)
        if not isinstance(name, str):
            raise PluginError(f"{kind} {cls!r} has no string attribute {attr!r}")
        reg.register(name, cls)

    getattr(get_plugin_manager().hook, hook)(register=register)
    _cache[hook] = reg
    return reg


RegistryGetter = Callable[[], Registry[Any]]
