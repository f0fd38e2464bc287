"""Plugin system: hookspecs, the plugin manager and the registries filled from the hooks."""

from vllm_core.plugins.hookspecs import hookimpl
from vllm_core.plugins.manager import (
    PluginInfo,
    get_plugin_manager,
    loaded_plugins,
    register_plugin,
    reset_plugin_manager,
    unregister_plugin,
)

__all__ = [
    "PluginInfo",
    "get_plugin_manager",
    "hookimpl",
    "loaded_plugins",
    "register_plugin",
    "reset_plugin_manager",
    "unregister_plugin",
]
