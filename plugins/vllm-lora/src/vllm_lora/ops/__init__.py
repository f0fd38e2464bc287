"""Batched LoRA ops (Punica-style): one launch per layer serves every adapter of the step.

Token rows carry the device slot of their adapter (``token_slots``, -1: the base model). For a
projection with ``S`` output slices (qkv: 3, gate/up: 2, o/down: 1) the op adds, in place,

    out[t, slice s] += scaling[slot_t] * (x[t] @ A[s, slot_t]^T) @ B[s, slot_t]^T

for every token whose slot is >= 0. ``A`` is ``[S, L, R, in]`` and ``B`` is stored transposed,
``[L, R, N]`` with the slices side by side in the columns they fill in ``out`` (L: ``max_loras``
slots, R: the padded ``max_lora_rank``; a rank-r adapter fills ``r`` rows and leaves zeros).
Implementations: ``TritonLoRAOps`` (GPUs), ``PlatformLoRAOps`` (the platform's own
``Ops.add_lora`` kernel, e.g. the cpu platform's), ``TorchLoRAOps`` (the core's PyTorch
definition, any platform).
"""

from __future__ import annotations

import os
from typing import Any

from vllm_core.plugins.api import ConfigError
from vllm_lora.ops.torch_ops import LoRAOps, PlatformLoRAOps, TorchLoRAOps

ENV_OPS = "VLLM_LORA_OPS"
"""Force an implementation (``torch``, ``triton`` or ``platform``; tests run the Triton kernels
through the engine on the CPU under ``TRITON_INTERPRET=1``)."""


def select_lora_ops(platform: Any) -> LoRAOps:
    """Triton kernels on a platform whose device is CUDA (or ROCm) with triton installed; the
    platform's ``Ops.add_lora`` elsewhere (its kernel where it has one, else PyTorch);
    ``VLLM_LORA_OPS`` forces one."""
    forced = os.environ.get(ENV_OPS, "").strip().lower()
    platform_ops = getattr(platform, "ops", None)
    name = str(getattr(platform, "name", ""))
    if forced == "torch":
        return TorchLoRAOps()
    if forced == "platform":
        return PlatformLoRAOps(platform_ops, name)
    if forced == "triton":
        from vllm_lora.ops.triton_ops import TritonLoRAOps

        return TritonLoRAOps()
    if forced:
        raise ConfigError(f"{ENV_OPS}={forced!r}: choose torch, triton or platform (or leave it unset)")
    device = getattr(platform, "device", None)
    kind = device().type if callable(device) else None
    if kind == "cuda":
        try:
            from vllm_lora.ops.triton_ops import TritonLoRAOps
        except ImportError:
            return PlatformLoRAOps(platform_ops, name)
        return TritonLoRAOps()
    return PlatformLoRAOps(platform_ops, name)


__all__ = ["LoRAOps", "PlatformLoRAOps", "TorchLoRAOps", "select_lora_ops"]
