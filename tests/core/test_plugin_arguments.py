"""The argument seams: plugins' engine-argument sections and request arguments, and the
errors when the plugin that handles an argument is not installed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from vllm_core import LoRARequest
from vllm_core.entrypoints.llm import build_engine_config
from vllm_core.errors import ConfigError, RequestError
from vllm_core.extensions.state import BlockKey
from vllm_core.plugins import api, register_plugin, reset_plugin_manager, unregister_plugin
from vllm_core.plugins.arguments import FrontendContext, RequestArguments


@pytest.fixture()
def only_builtins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No installed plugin is loaded (as in a core-only install)."""
    monkeypatch.setenv("VLLM_CORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    reset_plugin_manager()
    yield
    monkeypatch.delenv("VLLM_CORE_DISABLE_PLUGIN_AUTOLOAD")
    reset_plugin_manager()


def test_plugin_arguments_without_the_plugin_name_the_install(only_builtins: None) -> None:
    with pytest.raises(ConfigError, match=r"'enable_lora' is handled by the plugin vllm-lora \(pip install "
                       r"\./plugins/vllm-lora\)"):
        build_engine_config("m", enable_lora=True)
    with pytest.raises(ConfigError, match="unknown engine argument 'max_bananas'; known: .*block_size"):
        build_engine_config("m", max_bananas=1)
    args = RequestArguments.create(FrontendContext(build_engine_config("m"), None, None))
    with pytest.raises(RequestError, match=r"'lora_request' is handled by the plugin vllm-lora"):
        args.extensions({"lora_request": LoRARequest("a", 1, "/x")})
    assert args.extensions({"lora_request": None}) == []


@dataclass(frozen=True)
class Tag(api.RequestExtension):
    value: str

    def block_hash_extra_keys(self, block_index: int) -> tuple[BlockKey, ...]:
        return (("tag", self.value),) if block_index == 0 else ()


class TagConfig(api.PluginConfig):
    name: ClassVar[str] = "tagging"
    enable_tags: bool = False
    max_tags: int = 3


class TagArgument(api.RequestArgument):
    name: ClassVar[str] = "tag"

    def to_extensions(self, value: Any) -> Sequence[api.RequestExtension]:
        cfg = self.context.config.plugin_config(TagConfig)
        if cfg is None or not cfg.enable_tags:
            raise RequestError("tags are off")
        return [Tag(str(value))]


class TagPlugin:
    VLLM_CORE_PLUGIN_API = ">=1.1,<2"

    @api.hookimpl
    def register_engine_args(self, register: Any) -> None:
        register(TagConfig)

    @api.hookimpl
    def register_request_arguments(self, register: Any) -> None:
        register(TagArgument)


@pytest.fixture()
def tag_plugin() -> Iterator[None]:
    plugin = TagPlugin()
    register_plugin(plugin, name="tags")
    yield
    unregister_plugin(plugin)


def test_a_plugin_section_and_request_argument(tag_plugin: None) -> None:
    config = build_engine_config("m", enable_tags=True, max_tags=5, block_size=8)
    section = config.plugin_config(TagConfig)
    assert section is not None and section.enable_tags and section.max_tags == 5
    assert config.cache.block_size == 8
    with pytest.raises(ConfigError, match="max_tags"):
        build_engine_config("m", max_tags="many")
    args = RequestArguments.create(FrontendContext(config, None, None))
    assert args.extensions({"tag": "x"}) == [Tag("x")]
    off = RequestArguments.create(FrontendContext(build_engine_config("m"), None, None))
    with pytest.raises(RequestError, match="tags are off"):
        off.extensions({"tag": "x"})


def test_plugin_flags_reach_the_cli(tag_plugin: None) -> None:
    from vllm_core.entrypoints.cli.options import engine_keys, plugin_engine_options

    assert {"enable_tags", "max_tags"} <= set(engine_keys())
    names = {opt(lambda **kw: None).__click_params__[0].name for opt in plugin_engine_options()}  # type: ignore[attr-defined]
    assert {"enable_tags", "max_tags"} <= names
