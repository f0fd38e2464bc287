"""The acme example plugin as an installed distribution: the real ``vllm-core plugins --json``
lists it with its range, a light plugin module, and backend choice by capability."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import torch

from tests.conftest import import_or_require
from vllm_core.platforms import ENV_DEVICE

import_or_require("acme_vllm", "acme")


def plugins_json() -> dict[str, Any]:
    """``vllm-core plugins --json`` in a fresh process, every installed plugin loaded."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VLLM_CORE_PLUGINS", "VLLM_CORE_DISABLE_PLUGIN_AUTOLOAD", ENV_DEVICE)}
    exe = shutil.which("vllm-core", path=os.path.dirname(sys.executable)) or shutil.which("vllm-core")
    assert exe, "the vllm-core console script is not installed next to this interpreter"
    res = subprocess.run([exe, "plugins", "--json"], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_plugins_command_lists_acme_with_its_range_and_probe() -> None:
    report = plugins_json()
    acme = next((p for p in report["plugins"] if p["name"] == "acme"), None)
    assert acme is not None, f"acme not among the loaded plugins: {[p['name'] for p in report['plugins']]}"
    assert acme["distribution"] == "acme-vllm" and acme["module"] == "acme_vllm.plugin"
    assert (acme["api_range"], acme["api_compatible"]) == (">=1.0,<2", True)
    assert set(acme["hooks"]) == {"register_platforms", "register_attention_backends"}
    platform = next(p for p in report["platforms"] if p["name"] == "acme")
    assert platform == {"name": "acme", "priority": 1, "distribution": "acme-vllm", "available": True, "reason": None}
    assert "acme" in report["attention_backends"]


def test_plugin_module_imports_nothing_heavy() -> None:
    """Loading the plugin module (what every ``vllm-core`` start does) pulls in neither torch nor
    the platform's own modules."""
    code = (
        "import sys; import acme_vllm.plugin; "
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('acme_vllm.', 'vllm_core.plugins.api'))))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert res.stdout.strip() == "['acme_vllm.plugin']"


def test_acme_runs_its_own_attention_and_ops_even_beside_the_cpu_plugin() -> None:
    from acme_vllm.attention import AcmeAttention
    from acme_vllm.platform import AcmeOps

    from vllm_core.platforms import resolve_platform

    platform = resolve_platform("acme")
    assert platform.select_attention_backend(64, torch.float32) is AcmeAttention
    assert isinstance(platform.ops, AcmeOps)
