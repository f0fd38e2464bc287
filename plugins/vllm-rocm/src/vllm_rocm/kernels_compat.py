"""The check that the installed vllm-cuda ships the kernels API this plugin was written for."""

from __future__ import annotations

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from vllm_core.plugins.api import PluginError


def check_kernels_api(installed: str, wanted: str) -> None:
    """Raise ``PluginError`` unless ``installed`` (``vllm_cuda.kernels.KERNELS_API_VERSION``) is
    in ``wanted`` (``vllm_rocm.plugin.VLLM_CUDA_KERNELS_API``)."""
    try:
        ok = Version(installed) in SpecifierSet(wanted)
    except InvalidSpecifier as e:
        raise PluginError(f"vllm-rocm declares a malformed vllm-cuda kernels API range {wanted!r}: {e}") from e
    if not ok:
        raise PluginError(
            f"vllm-rocm needs vllm-cuda's kernels API {wanted}, but the installed vllm-cuda ships "
            f"{installed}; install the vllm-cuda release that matches this vllm-rocm "
            f"(pip install -U vllm-rocm pulls it in)")
