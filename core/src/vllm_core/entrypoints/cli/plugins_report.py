"""What ``vllm-core plugins`` shows, as plain data."""

from __future__ import annotations

import os
from typing import Any


def plugins_report() -> dict[str, Any]:
    from vllm_core.errors import PlatformNotAvailableError
    from vllm_core.platforms import ENV_DEVICE, probe_platforms
    from vllm_core.plugins import loaded_plugins, registry
    from vllm_core.plugins.compat import PLUGIN_API_VERSION

    plugins = [
        {"name": p.name, "distribution": p.distribution, "version": p.version, "module": p.module,
         "hooks": list(p.hooks), "api_range": p.api_range, "api_compatible": p.api_compatible}
        for p in loaded_plugins()
    ]
    probes = probe_platforms()
    forced = os.environ.get(ENV_DEVICE)
    selected: str | None
    if forced:
        names = [p.name for p in probes]
        selected = forced if forced in names else None
        if selected is None:
            try:
                registry.platforms().get(forced)
            except PlatformNotAvailableError as exc:
                selected = f"error: {exc}"
    else:
        selected = next((p.name for p in probes if p.available), None)
    return {
        "plugin_api_version": PLUGIN_API_VERSION,
        "plugins": plugins,
        "platforms": [
            {"name": p.name, "priority": p.priority, "distribution": p.distribution,
             "available": p.available, "reason": p.reason}
            for p in probes
        ],
        "selected": selected,
        "forced_by": ENV_DEVICE if forced else None,
        "attention_backends": registry.attention_backends().names(),
        "samplers": registry.samplers().names(),
        "model_loaders": registry.model_loaders().names(),
        "models": registry.models().names(),
        "tool_parsers": registry.tool_parsers().names(),
        "reasoning_parsers": registry.reasoning_parsers().names(),
        "runner_extensions": registry.runner_extensions().names(),
        "proposers": registry.proposers().names(),
    }
