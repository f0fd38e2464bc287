"""ROCm detection and what the platform chooses from its device, against a faked HIP torch.

What is faked is only what a ROCm build of torch reports (``torch.version.hip``, the visible
devices and their properties); the registry, the probe, the platform choice, the capability-
based attention-backend selection and the launch-config tables are the real ones.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import import_or_require
from vllm_core.errors import PluginError
from vllm_core.platforms import probe_platforms, resolve_platform
from vllm_core.plugins import registry

import_or_require("vllm_rocm", "rocm")
ON_AMD_GPU = bool(getattr(torch.version, "hip", None)) and torch.cuda.is_available()

import vllm_cuda.kernels  # noqa: E402
from vllm_cuda.kernels import TritonAttentionBackend, TritonOps  # noqa: E402
from vllm_cuda.platform import CUDAPlatform  # noqa: E402
from vllm_rocm.kernels_compat import check_kernels_api  # noqa: E402
from vllm_rocm.launch_amd import AMD_LAUNCH_CONFIGS  # noqa: E402
from vllm_rocm.platform import ROCmPlatform  # noqa: E402
from vllm_rocm.sampler import ROCmTritonSampler  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
NAMES = {"gfx942": "AMD Instinct MI300X", "gfx950": "AMD Instinct MI355X", "gfx90a": "AMD Instinct MI250X",
         "gfx1100": "AMD Radeon RX 7900 XTX"}


def fake_hip_torch(monkeypatch: pytest.MonkeyPatch, arch: str | None = "gfx942", devices: int = 1) -> None:
    """Make this CPU torch report what ROCm torch reports on a machine with ``devices`` GPUs of ``arch``."""
    monkeypatch.setattr(torch.version, "hip", "6.4.43482-0f2d60242")
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: devices > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    props = SimpleNamespace(gcnArchName=f"{arch}:sramecc+:xnack-", name=NAMES.get(str(arch), "AMD GPU"),
                            total_memory=192 << 30, multi_processor_count=304)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: props)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: props.name)


@pytest.fixture(autouse=True)
def _no_forced_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLLM_CORE_DEVICE", raising=False)


def test_registered_with_the_shared_backend_and_its_sampler() -> None:
    assert registry.platforms().get("rocm") is ROCmPlatform
    assert registry.attention_backends().get("triton") is TritonAttentionBackend
    assert registry.samplers().get("triton-rocm") is ROCmTritonSampler


def test_unavailable_here_and_says_why() -> None:
    probe = next(p for p in probe_platforms() if p.name == "rocm")
    assert probe.priority == 110 and probe.distribution == "vllm-rocm"
    if ON_AMD_GPU:
        assert probe.available
        return
    assert not probe.available
    assert probe.reason is not None and "not a ROCm build (torch.version.hip is unset)" in probe.reason
    assert "download.pytorch.org/whl/rocm" in probe.reason


def test_rocm_torch_without_a_visible_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_hip_torch(monkeypatch, devices=0)
    reason = ROCmPlatform.is_available()
    assert reason is not None and reason.startswith("no AMD GPU is visible") and "HIP_VISIBLE_DEVICES" in reason


def test_hip_torch_with_a_gpu_selects_rocm_over_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_hip_torch(monkeypatch)
    assert ROCmPlatform.is_available() is None
    assert CUDAPlatform.is_available() == "this torch is a ROCm build (use vllm-rocm)"
    probes = probe_platforms()
    assert probes[0].name == "rocm" and probes[0].available
    assert ROCmPlatform.priority > CUDAPlatform.priority
    platform = resolve_platform()
    assert isinstance(platform, ROCmPlatform)
    assert platform.describe() == "rocm (AMD Instinct MI300X, gfx942, vllm-rocm)"
    assert platform.dist_backend == "nccl" and platform.device_type == "cuda" and platform.is_accelerator


def test_forcing_rocm_on_a_cuda_torch_is_refused_with_the_reason() -> None:
    from vllm_core.errors import PlatformNotAvailableError

    with pytest.raises(PlatformNotAvailableError, match="'rocm' is installed but cannot run here: this torch is"):
        resolve_platform("rocm")


@pytest.mark.parametrize(
    ("arch", "configs", "fp8", "caps"),
    [
        ("gfx942", "gfx942", torch.float8_e4m3fnuz, {"bf16", "fp8"}),
        ("gfx950", "gfx950", torch.float8_e4m3fn, {"bf16", "fp8"}),
        ("gfx90a", "amd", None, {"bf16"}),
        ("gfx1100", "amd-wave32", None, {"bf16"}),
    ],
)
def test_device_decides_configs_capabilities_and_fp8(
    monkeypatch: pytest.MonkeyPatch, arch: str, configs: str, fp8: torch.dtype | None, caps: set[str]
) -> None:
    fake_hip_torch(monkeypatch, arch)
    platform = ROCmPlatform()
    assert platform.arch() == arch
    assert platform.capabilities() == frozenset({"rocm", "triton", "hip_graphs", arch, *caps})
    assert platform.fp8_dtype() is fp8
    ops = platform.ops
    assert isinstance(ops, TritonOps) and ops.configs.name == configs
    assert ops.configs.warp_size == (32 if arch == "gfx1100" else 64)
    # the capability-based choice picks the shared Triton backend, which takes the platform's configs
    backend_cls = platform.select_attention_backend(128, torch.bfloat16)
    assert backend_cls is TritonAttentionBackend
    assert backend_cls(16, 128, 8, 0.1, platform.ops).configs is ops.configs
    assert registry.samplers().get(platform.sampler_name())().configs == ops.configs


def test_launch_configs_wait_for_first_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """The platform is made before the device is set up: its ops ask for the architecture later."""
    fake_hip_torch(monkeypatch, arch="gfx950")
    ops = ROCmPlatform().ops
    assert isinstance(ops, TritonOps)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: SimpleNamespace(gcnArchName="gfx942:sramecc+:xnack-"))
    assert ops.configs is AMD_LAUNCH_CONFIGS["gfx942"]


def test_graphs_use_the_shared_runner() -> None:
    """HIP graphs are torch.cuda graphs on ROCm: the platform inherits vllm-cuda's runner."""
    assert ROCmPlatform.make_graph_runner is CUDAPlatform.make_graph_runner


def test_kernels_api_range_is_checked() -> None:
    from vllm_rocm.plugin import VLLM_CUDA_KERNELS_API

    check_kernels_api(vllm_cuda.kernels.KERNELS_API_VERSION, VLLM_CUDA_KERNELS_API)
    with pytest.raises(PluginError, match=r"kernels API >=1.0,<2, but the installed vllm-cuda ships 2.0"):
        check_kernels_api("2.0", VLLM_CUDA_KERNELS_API)


@pytest.mark.skipif(ON_AMD_GPU, reason="rocm is available on this machine")
def test_vllm_core_plugins_lists_rocm_installed_and_unavailable() -> None:
    """The real command, in a fresh process, with the plugins as installed."""
    out = subprocess.run([sys.executable, "-m", "vllm_core.entrypoints.cli.main", "plugins", "--json"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    report = json.loads(out)
    plugin = next(p for p in report["plugins"] if p["name"] == "rocm")
    assert plugin["distribution"] == "vllm-rocm" and plugin["api_compatible"]
    rocm = next(p for p in report["platforms"] if p["name"] == "rocm")
    assert rocm["available"] is False and "not a ROCm build" in rocm["reason"]
    assert report["selected"] != "rocm" and "triton-rocm" in report["samplers"]


def vllm_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
    return found


def test_vllm_rocm_uses_only_the_documented_kernels_surface() -> None:
    """vllm_rocm may import from vllm_cuda only ``vllm_cuda.kernels``'s ``__all__`` (the core's
    public API is checked for every plugin by tests/core/test_plugin_api.py)."""
    sources = sorted((ROOT / "plugins/vllm-rocm/src/vllm_rocm").glob("*.py"))
    assert sources
    public = set(vllm_cuda.kernels.__all__)
    bad = [
        f"{path.name}:{line}: {module} {names}"
        for path in sources for line, module, names in vllm_imports(path)
        if module.split(".")[0] == "vllm_cuda" and (module != "vllm_cuda.kernels" or not set(names) <= public)
    ]
    assert not bad, "vllm_rocm imports vllm_cuda outside vllm_cuda.kernels.__all__:\n" + "\n".join(bad)
