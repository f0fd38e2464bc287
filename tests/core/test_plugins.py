"""The plugin system: hooks and registries with in-test plugins, entry-point loading with a real
(temporary) distribution, the allow-list, autoload off, and clear errors."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import click
import pytest
from click.testing import CliRunner

from vllm_core import hookimpl
from vllm_core.errors import ConfigError, PlatformNotAvailableError, PluginError
from vllm_core.platforms import probe_platforms, resolve_platform
from vllm_core.platforms.interface import Platform
from vllm_core.plugins import manager, register_plugin, registry, reset_plugin_manager, unregister_plugin


class EchoToolParser:
    """A third-party tool parser: finds ``CALL name`` lines."""

    def parse(self, text: str) -> list[str]:
        return [line.split()[1] for line in text.splitlines() if line.startswith("CALL ")]


class ThinkParser:
    def split(self, text: str) -> tuple[str, str]:
        head, _, tail = text.partition("</think>")
        return head.removeprefix("<think>"), tail


class NeverPlatform(Platform):
    name: ClassVar[str] = "never"
    device_type: ClassVar[str] = "cpu"
    priority: ClassVar[int] = 1000
    distribution: ClassVar[str] = "acme-never"

    @classmethod
    def is_available(cls) -> str | None:
        return "no Acme accelerator on this machine"

    def memory_info(self) -> tuple[int, int]:
        return (0, 0)


class AcmePlugin:
    @hookimpl
    def register_tool_parsers(self, register: Any) -> None:
        register("echo", EchoToolParser)

    @hookimpl
    def register_reasoning_parsers(self, register: Any) -> None:
        register("think", ThinkParser)

    @hookimpl
    def register_platforms(self, register: Any) -> None:
        register(NeverPlatform)

    @hookimpl
    def register_commands(self, cli: click.Group) -> None:
        @cli.command(name="acme-hello")
        @click.argument("who")
        def hello(who: str) -> None:
            click.echo(f"hello {who} from acme")


@pytest.fixture
def acme() -> Iterator[AcmePlugin]:
    plugin = AcmePlugin()
    register_plugin(plugin, name="acme")
    yield plugin
    unregister_plugin(plugin)


@pytest.fixture
def fresh_manager() -> Iterator[None]:
    reset_plugin_manager()
    yield
    reset_plugin_manager()


def test_builtins_are_registered_through_hooks() -> None:
    assert "reference" in registry.platforms()
    assert "reference" in registry.attention_backends()
    assert "reference" in registry.samplers()
    assert {"safetensors", "gguf", "dummy"} <= set(registry.model_loaders())
    assert {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"} <= set(registry.models())
    builtin = next(p for p in manager.loaded_plugins() if p.name == "builtin")
    assert "register_platforms" in builtin.hooks


def test_in_process_plugin_fills_every_registry(acme: AcmePlugin) -> None:
    parser = registry.tool_parsers().get("echo")()
    assert parser.parse("CALL get_weather\nhi\nCALL add") == ["get_weather", "add"]
    assert registry.reasoning_parsers().get("think")().split("<think>hmm</think>Paris") == ("hmm", "Paris")
    assert "never" in registry.platforms()


def test_unregistering_removes_the_plugin(acme: AcmePlugin) -> None:
    assert "echo" in registry.tool_parsers()
    unregister_plugin(acme)
    assert "echo" not in registry.tool_parsers()
    register_plugin(acme, name="acme")  # the fixture unregisters it again


def test_unknown_names_list_the_choices(acme: AcmePlugin) -> None:
    with pytest.raises(ConfigError, match=r"unknown tool parser 'nope'; registered: echo, hermes, llama3_json"):
        registry.tool_parsers().get("nope")
    with pytest.raises(ConfigError, match=r"unknown reasoning parser 'r1'; registered: deepseek_r1, think"):
        registry.reasoning_parsers().get("r1")


def test_probe_reports_unavailable_platform_with_reason(acme: AcmePlugin) -> None:
    probes = {p.name: p for p in probe_platforms()}
    assert probes["never"].available is False
    assert probes["never"].reason == "no Acme accelerator on this machine"
    # Highest priority, but unavailable: it does not win.
    assert resolve_platform().name != "never"
    with pytest.raises(PlatformNotAvailableError, match="cannot run here: no Acme accelerator"):
        resolve_platform("never")


def test_forcing_a_missing_platform_says_how_to_install_it() -> None:
    with pytest.raises(PlatformNotAvailableError) as info:
        resolve_platform("cuda")
    msg = str(info.value)
    assert "platform 'cuda' is not installed" in msg
    assert "reference" in msg and "pip install ./plugins/vllm-cuda" in msg
    for name in ("rocm", "tpu"):  # shipped in this tree: the hint names the package
        with pytest.raises(PlatformNotAvailableError, match=f"pip install ./plugins/vllm-{name}"):
            resolve_platform(name)
    with pytest.raises(PlatformNotAvailableError) as info:
        resolve_platform("xpu")  # not shipped: no package is named that does not exist
    assert "install the plugin package that provides it" in str(info.value) and "vllm-xpu" not in str(info.value)


def test_env_var_forces_the_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CORE_DEVICE", "reference")
    assert resolve_platform().name == "reference"
    monkeypatch.setenv("VLLM_CORE_DEVICE", "cuda")
    with pytest.raises(PlatformNotAvailableError, match="pip install ./plugins/vllm-cuda"):
        resolve_platform()


def test_duplicate_registration_is_an_error() -> None:
    class Twice:
        @hookimpl
        def register_tool_parsers(self, register: Any) -> None:
            register("dup", EchoToolParser)
            register("dup", ThinkParser)

    plugin = Twice()
    register_plugin(plugin)
    try:
        with pytest.raises(PluginError, match="'dup' registered twice"):
            registry.tool_parsers()
    finally:
        unregister_plugin(plugin)


def test_plugin_command_is_added_to_the_cli(acme: AcmePlugin) -> None:
    from vllm_core.entrypoints.cli.main import build_cli

    result = CliRunner().invoke(build_cli(), ["acme-hello", "world"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "hello world from acme"


def test_plugins_command_json(acme: AcmePlugin) -> None:
    from vllm_core.entrypoints.cli.main import cli

    result = CliRunner().invoke(cli, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    names = [p["name"] for p in report["platforms"]]
    assert "reference" in names and "never" in names
    never = next(p for p in report["platforms"] if p["name"] == "never")
    assert never["reason"] == "no Acme accelerator on this machine"
    assert report["selected"] in names and report["selected"] != "never"
    assert "echo" in report["tool_parsers"] and "think" in report["reasoning_parsers"]


# ------------------------------------------------------------- real entry-point distributions
def make_distribution(root: Path, dist: str, module: str, body: str) -> None:
    """A minimal installed distribution on ``root`` (dist-info + module), as pip would leave it."""
    (root / f"{module}.py").write_text(textwrap.dedent(body))
    info = root / f"{dist.replace('-', '_')}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[vllm_core]\n{module} = {module}\n")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_manager: None) -> Path:
    make_distribution(tmp_path, "acme-good", "acme_good", """
        from vllm_core import hookimpl

        class Parser:
            pass

        @hookimpl
        def register_tool_parsers(register):
            register("acme", Parser)
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_entry_point_plugin_is_loaded(site: Path) -> None:
    assert "acme" in registry.tool_parsers()
    info = next(p for p in manager.loaded_plugins() if p.name == "acme_good")
    assert (info.distribution, info.version) == ("acme-good", "1.2.3")
    assert info.hooks == ("register_tool_parsers",)


def test_allow_list_limits_loaded_plugins(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CORE_PLUGINS", "something_else")
    reset_plugin_manager()
    assert "acme" not in registry.tool_parsers()
    monkeypatch.setenv("VLLM_CORE_PLUGINS", "something_else, acme_good")
    reset_plugin_manager()
    assert "acme" in registry.tool_parsers()


def test_autoload_can_be_disabled(site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    reset_plugin_manager()
    assert "acme" not in registry.tool_parsers()
    assert [p.name for p in manager.loaded_plugins()] == ["builtin"]
    assert "reference" in registry.platforms()


def test_broken_plugin_is_a_clear_error(site: Path) -> None:
    make_distribution(site, "acme-broken", "acme_broken", "import does_not_exist_anywhere\n")
    sys.modules.pop("acme_broken", None)
    reset_plugin_manager()
    with pytest.raises(PluginError) as info:
        registry.platforms()
    msg = str(info.value)
    assert "'acme_broken'" in msg and "'acme-broken'" in msg
    assert "does_not_exist_anywhere" in msg and "VLLM_CORE_PLUGINS" in msg
