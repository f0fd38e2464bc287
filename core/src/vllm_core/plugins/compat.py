"""The plugin API's version and the check of the range each plugin declares.

``PLUGIN_API_VERSION`` follows semver: a minor release only adds optional things (new hooks,
new optional fields of boundary dataclasses, new ``Platform`` methods with defaults); a major
release may break. A plugin module states the range it was written for::

    VLLM_CORE_PLUGIN_API = ">=1.0,<2"

A plugin whose range excludes the running core is refused with a ``PluginError``; one that
declares nothing loads with a warning (it may break on the next major version).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from vllm_core.errors import PluginError

logger = logging.getLogger(__name__)

PLUGIN_API_VERSION = "1.4"
"""The version of the public plugin API (``docs/plugin-api.md``) this core provides."""

API_ATTRIBUTE = "VLLM_CORE_PLUGIN_API"
"""Module attribute in which a plugin declares the API range it was written for."""

RECOMMENDED_RANGE = f">={PLUGIN_API_VERSION},<{Version(PLUGIN_API_VERSION).major + 1}"


@dataclass(frozen=True)
class ApiCheck:
    """What a plugin declared and whether the running core satisfies it."""

    declared: str | None
    """The plugin's ``VLLM_CORE_PLUGIN_API``; None when it declares nothing."""
    compatible: bool
    """False only when a declared range excludes ``PLUGIN_API_VERSION``."""


def check_plugin_api(module: object, plugin: str, distribution: str) -> ApiCheck:
    """Read ``module.VLLM_CORE_PLUGIN_API`` and refuse a plugin the running core cannot serve.

    Raises ``PluginError`` naming the plugin, its distribution, its range, the core's API
    version and the fix when the range is malformed or excludes this core."""
    from vllm_core import __version__

    declared = getattr(module, API_ATTRIBUTE, None)
    if declared is None:
        logger.warning(
            "plugin %r (distribution %r) declares no %s; it loads, but may break with any vllm-core "
            "release: add %s = %r to its plugin module",
            plugin, distribution, API_ATTRIBUTE, API_ATTRIBUTE, RECOMMENDED_RANGE,
        )
        return ApiCheck(None, True)
    if not isinstance(declared, str):
        raise PluginError(
            f"plugin {plugin!r} (distribution {distribution!r}) has {API_ATTRIBUTE} = {declared!r}; "
            f"it must be a version range string such as {RECOMMENDED_RANGE!r}"
        )
    try:
        spec = SpecifierSet(declared)
    except InvalidSpecifier as exc:
        raise PluginError(
            f"plugin {plugin!r} (distribution {distribution!r}) has an invalid {API_ATTRIBUTE} "
            f"{declared!r} ({exc}); write a range such as {RECOMMENDED_RANGE!r}"
        ) from None
    if not spec.contains(PLUGIN_API_VERSION, prereleases=True):
        raise PluginError(
            f"plugin {plugin!r} from distribution {distribution!r} needs vllm-core plugin API "
            f"{declared}, but this vllm-core ({__version__}) provides plugin API {PLUGIN_API_VERSION}; "
            f"install a release of {distribution} written for plugin API {PLUGIN_API_VERSION} "
            f"(range {RECOMMENDED_RANGE}), or a vllm-core whose plugin API is in {declared}; "
            "or leave the plugin out with VLLM_CORE_PLUGINS=<names>"
        )
    return ApiCheck(declared, True)
