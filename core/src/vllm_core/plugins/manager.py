"""The one pluggy ``PluginManager``: built-ins first, then entry-point plugins.

Entry points of the group ``vllm_core`` load automatically unless
``VLLM_CORE_DISABLE_PLUGIN_AUTOLOAD=1``; ``VLLM_CORE_PLUGINS=cpu,acme`` loads only the named
entry points. A plugin that fails to import is a ``PluginError`` naming its distribution,
never a silent fallback.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

import pluggy

from vllm_core.errors import PluginError
from vllm_core.plugins import hookspecs
from vllm_core.plugins.compat import check_plugin_api

logger = logging.getLogger(__name__)

ENV_ALLOW = "VLLM_CORE_PLUGINS"
ENV_DISABLE_AUTOLOAD = "VLLM_CORE_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_MODULES = ("vllm_core.plugins.builtin",)


@dataclass(frozen=True)
class PluginInfo:
    """One loaded plugin, as ``vllm-core plugins`` reports it."""

    name: str
    distribution: str
    version: str
    module: str
    hooks: tuple[str, ...] = field(default_factory=tuple)
    api_range: str | None = None
    """The ``VLLM_CORE_PLUGIN_API`` range the plugin declares (None: it declares none)."""
    api_compatible: bool = True
    """Whether the running core's ``PLUGIN_API_VERSION`` is in that range."""


_lock = threading.Lock()
_pm: pluggy.PluginManager | None = None
_infos: list[PluginInfo] = []


def _allow_list() -> set[str] | None:
    raw = os.environ.get(ENV_ALLOW)
    if raw is None or not raw.strip():
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def _autoload_disabled() -> bool:
    return os.environ.get(ENV_DISABLE_AUTOLOAD, "").lower() in ("1", "true", "yes")


def _hooks_of(pm: pluggy.PluginManager, plugin: object) -> tuple[str, ...]:
    return tuple(sorted(h.name for h in pm.get_hookcallers(plugin) or []))


def _load_entry_point(pm: pluggy.PluginManager, ep: EntryPoint) -> PluginInfo:
    dist = ep.dist.name if ep.dist is not None else "unknown distribution"
    version = ep.dist.version if ep.dist is not None else "?"
    try:
        module = ep.load()
    except Exception as exc:  # noqa: BLE001 - any import failure is reported the same way
        raise PluginError(
            f"vllm_core plugin {ep.name!r} from distribution {dist!r} failed to import "
            f"({ep.value}): {type(exc).__name__}: {exc}. Reinstall it, fix its dependencies, "
            f"or leave it out with {ENV_ALLOW}=<names> / {ENV_DISABLE_AUTOLOAD}=1"
        ) from exc
    api = check_plugin_api(module, ep.name, dist)
    if not pm.is_registered(module):
        pm.register(module, name=ep.name)
    return PluginInfo(ep.name, dist, version, ep.value, _hooks_of(pm, module), api.declared, api.compatible)


def _build() -> tuple[pluggy.PluginManager, list[PluginInfo]]:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    infos: list[PluginInfo] = []
    from vllm_core import __version__
    from vllm_core.plugins.compat import PLUGIN_API_VERSION

    for mod_name in BUILTIN_MODULES:
        module: ModuleType = importlib.import_module(mod_name)
        pm.register(module, name=mod_name)
        infos.append(PluginInfo(
            "builtin", "vllm-core", __version__, mod_name, _hooks_of(pm, module), f"=={PLUGIN_API_VERSION}"
        ))
    if _autoload_disabled():
        logger.info("plugin autoload disabled by %s", ENV_DISABLE_AUTOLOAD)
        return pm, infos
    allow = _allow_list()
    for ep in entry_points(group=hookspecs.PROJECT_NAME):
        if allow is not None and ep.name not in allow:
            logger.debug("plugin %s not in %s, skipped", ep.name, ENV_ALLOW)
            continue
        infos.append(_load_entry_point(pm, ep))
    return pm, infos


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, built on first use."""
    global _pm, _infos
    with _lock:
        if _pm is None:
            _pm, _infos = _build()
        return _pm


def loaded_plugins() -> list[PluginInfo]:
    get_plugin_manager()
    return list(_infos)


def reset_plugin_manager() -> None:
    """Forget the manager so the next use reloads plugins (tests, changed environment)."""
    global _pm, _infos
    from vllm_core.plugins import registry

    with _lock:
        _pm, _infos = None, []
    registry.clear_caches()


def register_plugin(plugin: object, name: str | None = None) -> None:
    """Register an in-process plugin object or module (tests, notebooks). Its
    ``VLLM_CORE_PLUGIN_API`` range is checked as for an installed plugin."""
    from vllm_core.plugins import registry

    label = str(name or getattr(plugin, "__name__", None) or type(plugin).__name__)
    check_plugin_api(plugin, label, "in-process")
    get_plugin_manager().register(plugin, name=name)
    registry.clear_caches()


def unregister_plugin(plugin: object) -> None:
    from vllm_core.plugins import registry

    get_plugin_manager().unregister(plugin)
    registry.clear_caches()
