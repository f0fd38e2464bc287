"""The versioned plugin API: plugins import only ``vllm_core.plugins.api`` (and ``vllm_core``'s
public names), declared ranges are checked on real entry points and in-process plugins, and
deprecated aliases warn."""

from __future__ import annotations

import ast
import logging
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import vllm_core
from vllm_core.errors import PluginError
from vllm_core.plugins import api, loaded_plugins, register_plugin, reset_plugin_manager
from vllm_core.plugins.compat import PLUGIN_API_VERSION

SUGGESTED_RANGE = f">={PLUGIN_API_VERSION},<{int(PLUGIN_API_VERSION.split('.')[0]) + 1}"
"""The range the core suggests to a plugin that declares none (or a malformed one)."""

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_SOURCES = sorted((ROOT / "plugins").glob("*/src/**/*.py")) + sorted((ROOT / "examples").glob("*/src/**/*.py"))


# ------------------------------------------------------------------------------- import walk
def forbidden_imports(path: Path) -> list[str]:
    """``file:line: import`` for every import of ``vllm_core`` outside the public API (also the
    imports inside functions and ``TYPE_CHECKING`` blocks)."""
    allowed = {"vllm_core": set(vllm_core.__all__), "vllm_core.plugins.api": set(api.__all__)}
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        where = f"{shown}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import):
            bad += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] == "vllm_core"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "vllm_core":
            names = [a.name for a in node.names]
            public = allowed.get(node.module or "")
            if public is None or not set(names) <= public:
                outside = names if public is None else [n for n in names if n not in public]
                bad.append(f"{where}: from {node.module} import {', '.join(names)} (not public: {', '.join(outside)})")
    return bad


def test_plugins_import_only_the_public_api() -> None:
    assert any("vllm_cpu" in str(p) for p in PLUGIN_SOURCES) and any("acme_vllm" in str(p) for p in PLUGIN_SOURCES)
    bad = [line for path in PLUGIN_SOURCES for line in forbidden_imports(path)]
    assert not bad, (
        "plugins may import only `from vllm_core import <vllm_core.__all__>` and "
        "`from vllm_core.plugins.api import <api.__all__>`:\n  " + "\n  ".join(bad)
    )


def test_the_walk_catches_private_imports(tmp_path: Path) -> None:
    path = tmp_path / "probe.py"
    path.write_text(
        "import vllm_core.config\n"
        "from vllm_core.plugins.api import Ops, Request\n"
        "from vllm_core import hookimpl, LLM\n"
        "def f():\n    from vllm_core.attention.backend import AttentionBackend\n"
    )
    assert sorted(forbidden_imports(path)) == [
        "probe.py:1: import vllm_core.config",
        "probe.py:2: from vllm_core.plugins.api import Ops, Request (not public: Request)",
        "probe.py:5: from vllm_core.attention.backend import AttentionBackend (not public: AttentionBackend)",
    ]


def test_public_names_exist() -> None:
    missing = [n for n in api.__all__ if not hasattr(api, n)]
    assert not missing, f"vllm_core.plugins.api.__all__ lists names it lacks: {missing}"


# --------------------------------------------------------------------- ranges on entry points
@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test builds its own plugin manager; the next test (anywhere) starts from scratch."""
    monkeypatch.delenv("VLLM_CORE_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    reset_plugin_manager()
    yield
    monkeypatch.undo()
    reset_plugin_manager()


def install_plugin(root: Path, monkeypatch: pytest.MonkeyPatch, name: str, declaration: str) -> str:
    """A module ``name`` and distribution ``<name>-dist`` on ``root`` (as pip leaves them), with
    ``declaration`` in the plugin module; only this plugin is loaded (``VLLM_CORE_PLUGINS``).
    Returns the distribution name."""
    dist = f"{name.replace('_', '-')}-dist"
    (root / f"{name}.py").write_text(textwrap.dedent(f"""
        from vllm_core import hookimpl
        {declaration}

        @hookimpl
        def register_tool_parsers(register):
            register("{name}", object)
    """))
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[vllm_core]\n{name} = {name}\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("VLLM_CORE_PLUGINS", name)
    monkeypatch.delitem(sys.modules, name, raising=False)
    reset_plugin_manager()
    return dist


def test_plugin_for_a_future_api_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = install_plugin(tmp_path, monkeypatch, "future_plugin", 'VLLM_CORE_PLUGIN_API = ">=2"')
    with pytest.raises(PluginError) as info:
        loaded_plugins()
    msg = str(info.value)
    assert "'future_plugin'" in msg and dist in msg and ">=2" in msg and PLUGIN_API_VERSION in msg
    assert f"install a release of {dist} written for plugin API {PLUGIN_API_VERSION}" in msg  # the fix
    assert "VLLM_CORE_PLUGINS" in msg


def test_plugin_in_range_loads_with_its_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = install_plugin(tmp_path, monkeypatch, "current_plugin", 'VLLM_CORE_PLUGIN_API = ">=1.0,<2"')
    info = next(p for p in loaded_plugins() if p.name == "current_plugin")
    assert (info.distribution, info.version, info.module) == (dist, "0.1", "current_plugin")
    assert (info.api_range, info.api_compatible) == (">=1.0,<2", True)
    assert info.hooks == ("register_tool_parsers",)


def test_plugin_without_a_range_loads_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dist = install_plugin(tmp_path, monkeypatch, "undeclared_plugin", "")
    with caplog.at_level(logging.WARNING, logger="vllm_core.plugins.compat"):
        info = next(p for p in loaded_plugins() if p.name == "undeclared_plugin")
    assert (info.api_range, info.api_compatible) == (None, True)
    warning = next(r.getMessage() for r in caplog.records if "undeclared_plugin" in r.getMessage())
    assert dist in warning and "VLLM_CORE_PLUGIN_API" in warning and SUGGESTED_RANGE in warning


@pytest.mark.parametrize("declared", ['"banana"', "2"])
def test_malformed_range_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, declared: str) -> None:
    dist = install_plugin(tmp_path, monkeypatch, "odd_plugin", f"VLLM_CORE_PLUGIN_API = {declared}")
    with pytest.raises(PluginError) as info:
        loaded_plugins()
    msg = str(info.value)
    assert "'odd_plugin'" in msg and dist in msg and declared.strip('"') in msg and SUGGESTED_RANGE in msg


# -------------------------------------------------------------------------- in-process plugins
def test_in_process_plugin_for_a_future_api_is_refused() -> None:
    class FuturePlugin:
        VLLM_CORE_PLUGIN_API = ">=2"

    with pytest.raises(PluginError, match=rf"'future'.*'in-process'.*>=2.*plugin API {re.escape(PLUGIN_API_VERSION)}"):
        register_plugin(FuturePlugin(), name="future")
    assert "future" not in [p.name for p in loaded_plugins()]


# ------------------------------------------------------------------------ deprecated aliases
def test_deprecated_alias_warns_and_returns_the_new_object(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(api._DEPRECATED, "OldOps", ("Ops", "1.1"))
    with pytest.warns(DeprecationWarning, match=r"vllm_core\.plugins\.api\.OldOps is deprecated .* 1\.1; use Ops"):
        old = api.OldOps  # type: ignore[attr-defined]
    assert old is api.Ops
    with pytest.raises(AttributeError, match="NoSuchName"):
        api.NoSuchName  # type: ignore[attr-defined]  # noqa: B018
