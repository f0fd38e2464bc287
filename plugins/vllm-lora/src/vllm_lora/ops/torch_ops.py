"""The ``LoRAOps`` interface, and the implementations that run the platform's ``Ops.add_lora``
(plugin API 1.4): ``PlatformLoRAOps`` (the platform's kernel where it has one, e.g. the cpu
platform's per-row C kernel) and ``TorchLoRAOps`` (the core's PyTorch definition on any platform:
no host syncs, no shapes that depend on the step's adapters; the oracle of the Triton kernels).
"""

from __future__ import annotations

import numpy as np
import torch

from vllm_core.plugins.api import NATIVE_OPS, Ops


class LoRAOps:
    """The interface: ``add_lora`` adds every token's adapter delta to ``out`` in place."""

    name = "abstract"

    def token_tables(self, token_slots: torch.Tensor, scaling: torch.Tensor, dtype: torch.dtype,
                     ) -> tuple[torch.Tensor, ...] | None:
        """Per-step tables an implementation computes once for all layers from the full
        ``token_slots`` buffer (rows past the step's are -1), or None."""
        return None

    def host_tables(self, rows: np.ndarray, num_slots: int, num_rows: int) -> tuple[np.ndarray, ...] | None:
        """The same tables from the step's slots on the host (``rows``: the step's [T] int64 slots;
        ``num_rows``: the persistent buffer's N), or None where the tables need the device.
        Each table's last axis may be shorter than the device tables': it fills their start."""
        return None

    def step_tables(self, tables: tuple[torch.Tensor, ...], num_tokens: int) -> tuple[torch.Tensor, ...]:
        """The tables as ``add_lora`` takes them for a step of ``num_tokens`` rows."""
        return tables

    def add_lora(
        self,
        out: torch.Tensor,
        x: torch.Tensor,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        slice_sizes: tuple[int, ...],
        token_slots: torch.Tensor,
        scaling: torch.Tensor,
        tables: tuple[torch.Tensor, ...] | None = None,
    ) -> None:
        """out: [T, N]; x: [T, in]; lora_a: [S, L, R, in]; lora_b: [L, R, N], B transposed,
        the slices side by side in the columns they have in ``out`` (slice s: ``slice_sizes[s]``
        columns after the ones before it, ``sum(slice_sizes) == N``); token_slots: [T] int64
        (-1: no adapter); scaling: [L] float32; ``tables``: ``token_tables`` of this step,
        computed here when None."""
        raise NotImplementedError


class PlatformLoRAOps(LoRAOps):
    """The platform's own ``Ops.add_lora`` (plugin API 1.4): a kernel where the platform has one
    (the cpu platform's recorded plans can hold it), else the core's PyTorch definition."""

    def __init__(self, platform_ops: Ops | None = None, platform_name: str = "") -> None:
        self.platform_ops = platform_ops if platform_ops is not None else NATIVE_OPS
        self.kernel = type(self.platform_ops).add_lora is not Ops.add_lora
        """Does the platform override the op (with a kernel its graphs can record)?"""
        self.name = f"{platform_name or 'platform'} kernel" if self.kernel else "torch"

    def token_tables(self, token_slots: torch.Tensor, scaling: torch.Tensor, dtype: torch.dtype,
                     ) -> tuple[torch.Tensor, ...] | None:
        return self.platform_ops.lora_tables(token_slots, scaling, dtype)

    def step_tables(self, tables: tuple[torch.Tensor, ...], num_tokens: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[:num_tokens] for t in tables)

    def add_lora(
        self,
        out: torch.Tensor,
        x: torch.Tensor,
        lora_a: torch.Tensor,
        lora_b: torch.Tensor,
        slice_sizes: tuple[int, ...],
        token_slots: torch.Tensor,
        scaling: torch.Tensor,
        tables: tuple[torch.Tensor, ...] | None = None,
    ) -> None:
        self.platform_ops.add_lora(out, x, lora_a, lora_b, slice_sizes, token_slots, scaling, tables)


class TorchLoRAOps(PlatformLoRAOps):
    """The core's PyTorch definition (``NATIVE_OPS.add_lora``) on any platform: the masked
    all-slot shrink and one expand matmul per slice, no host syncs, static shapes."""

    def __init__(self) -> None:
        super().__init__(NATIVE_OPS)
