"""``TritonOps``: the platform's named ops, each a Triton kernel (native fallback otherwise).

Shared by the NVIDIA and AMD platforms: each hands it the launch configs of its device.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from vllm_core.plugins.api import Ops
from vllm_cuda.launch import LaunchConfigs


class TritonOps(Ops):
    """Triton kernels for the ops models call on every layer, launched with one device's configs.

    ``configs`` may be a function that returns them: it runs on first use, so a platform can
    make its ops before the device is set up.
    """

    def __init__(self, configs: LaunchConfigs | Callable[[], LaunchConfigs]) -> None:
        self._configs_source = configs

    @functools.cached_property
    def configs(self) -> LaunchConfigs:
        """The launch-config table entry the kernels run with (also read by the attention backend);
        after the first use a plain attribute."""
        source = self._configs_source
        return source if isinstance(source, LaunchConfigs) else source()

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        from vllm_cuda.ops.norm import rms_norm

        return rms_norm(x, weight, eps, self.configs)

    def fused_add_rms_norm(
        self, x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from vllm_cuda.ops.norm import fused_add_rms_norm

        return fused_add_rms_norm(x, residual, weight, eps, self.configs)

    def rotary_embedding(
        self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, cos_sin_cache: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from vllm_cuda.ops.rotary import rotary_embedding

        return rotary_embedding(positions, q, k, cos_sin_cache, self.configs)

    def qk_norm_rotary(
        self,
        positions: torch.Tensor,
        q: torch.Tensor,
        k: torch.Tensor,
        q_weight: torch.Tensor,
        k_weight: torch.Tensor,
        eps: float,
        cos_sin_cache: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from vllm_cuda.ops.rotary import qk_norm_rotary

        return qk_norm_rotary(positions, q, k, q_weight, k_weight, eps, cos_sin_cache, self.configs)

    def silu_and_mul(self, x: torch.Tensor) -> torch.Tensor:
        from vllm_cuda.ops.activation import silu_and_mul

        return silu_and_mul(x, self.configs)

    def reshape_and_cache(
        self,
        key: torch.Tensor,
        value: torch.Tensor,
        key_cache: torch.Tensor,
        value_cache: torch.Tensor,
        slot_mapping: torch.Tensor,
    ) -> None:
        from vllm_cuda.ops.kv_cache import reshape_and_cache

        reshape_and_cache(key, value, key_cache, value_cache, slot_mapping, self.configs)


CUDAOps = TritonOps
"""The name this class had before the AMD platform shared it."""
