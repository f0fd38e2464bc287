"""Batched LoRA ops (Punica-style): one launch per layer serves every adapter of the step.

Token rows carry the device slot of their adapter (``token_slots``, -1: the base model). For a
projection with ``S`` output slices (qkv: 3, gate/up: 2, o/down: 1) the op adds, in place,

    out[t, slice s] += scaling[slot_t] * (x[t] @ A[s, slot_t]^T) @ B[s, slot_t]^T

for every token whose slot is >= 0. ``A`` is ``[S, L, R, in]`` and ``B`` is stored transposed,
``[L, R, N]`` with the slices side by side in the columns they fill in ``out`` (L: ``max_loras``
slots, R: the padded ``max_lora_rank``; a rank-r adapter fills ``r`` rows and leaves zeros). Implementations: ``TorchLoRAOps`` (any platform) and
``TritonLoRAOps`` (GPUs).
"""

from __future__ import annotations

import os
from typing import Any

from vllm_core.plugins.api import ConfigError
from vllm_lora.ops.torch_ops import LoRAOps, TorchLoRAOps

ENV_OPS = "VLLM_LORA_OPS"
"""Force an implementation (``torch`` or ``triton``; tests run the Triton kernels through the
engine on the CPU under ``TRITON_INTERPRET=1``)."""


def select_lora_ops(platform: Any) -> LoRAOps:
    """Triton kernels on a platform whose device is CUDA (or ROCm) with triton installed; the
    PyTorch implementation elsewhere; ``VLLM_LORA_OPS`` forces one."""
    forced = os.environ.get(ENV_OPS, "").strip().lower()
    if forced == "torch":
        return TorchLoRAOps()
    if forced == "triton":
        from vllm_lora.ops.triton_ops import TritonLoRAOps

        return TritonLoRAOps()
    if forced:
        raise ConfigError(f"{ENV_OPS}={forced!r}: choose torch or triton (or leave it unset)")
    device = getattr(platform, "device", None)
    kind = device().type if callable(device) else None
    if kind == "cuda":
        try:
            from vllm_lora.ops.triton_ops import TritonLoRAOps
        except ImportError:
            return TorchLoRAOps()
        return TritonLoRAOps()
    return TorchLoRAOps()


__all__ = ["LoRAOps", "TorchLoRAOps", "select_lora_ops"]
