"""``AcmePlatform`` and ``AcmeOps``: a platform is a device, its kernels and its memory.

Acme "hardware" is the host CPU here, so that the template runs anywhere; a real vendor's
platform would probe its runtime in ``is_available``, report device memory in ``memory_info``,
set ``device_type`` to its torch device and call its own kernels from ``AcmeOps``.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from vllm_core.plugins.api import Ops, Platform, cpu_memory_info


class AcmeOps(Ops):
    """Acme's kernels. Override what the device does better; every op left alone falls back to
    the native PyTorch definition in ``Ops`` (which the conformance kit compares against).
    ``fused_add_rms_norm``, ``qk_norm_rotary`` and ``silu_mlp`` call these two, so they use
    Acme's versions too."""

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """x: [..., hidden]; statistics in float32 whatever the dtype, as the native op."""
        xf = x.float()
        inv_rms = torch.rsqrt(xf.square().mean(dim=-1, keepdim=True) + eps)
        return (xf * inv_rms).to(x.dtype) * weight

    def silu_and_mul(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., 2 * d] (gate | up) -> silu(gate) * up: [..., d].

        silu in float32, rounded to x's dtype before the product, as the native op rounds: in
        bfloat16 one rounding more or less is amplified by the down projection of ``silu_mlp``
        beyond the kit's tolerance."""
        gate, up = x.chunk(2, dim=-1)
        g = gate.float()
        return (g * torch.sigmoid(g)).to(x.dtype) * up


class AcmePlatform(Platform):
    """The Acme accelerator (simulated on the host CPU)."""

    name: ClassVar[str] = "acme"
    """What ``--device acme`` / ``VLLM_CORE_DEVICE=acme`` select."""
    device_type: ClassVar[str] = "cpu"
    """The torch device the tensors live on."""
    priority: ClassVar[int] = 1
    """Above the reference platform (0), below the tuned cpu platform (10): chosen automatically
    only when nothing better is installed."""
    distribution: ClassVar[str] = "acme-vllm"

    @classmethod
    def is_available(cls) -> str | None:
        """None when the platform can run here, else why not (shown by ``vllm-core plugins``).
        A real device checks its driver here, cheaply: this runs for every ``vllm-core`` start."""
        return None

    def memory_info(self) -> tuple[int, int]:
        """(free, total) bytes where the KV cache lives: host memory for the simulated device."""
        return cpu_memory_info()

    def capabilities(self) -> frozenset[str]:
        """Attention backends are chosen by capability: ``AcmeAttention.requires`` is
        ``{"acme"}``. Not ``"cpu"``, so the cpu plugin's backend never runs on Acme."""
        return frozenset({"acme"})

    def make_ops(self) -> Ops:
        return AcmeOps()
