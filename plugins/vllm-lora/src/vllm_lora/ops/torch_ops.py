"""``TorchLoRAOps``: the batched LoRA op in plain PyTorch (every platform; the oracle of the
Triton kernels).

No host syncs and no shapes that depend on the adapters in the step: the shrink runs against
every slot at once (``x @ A_all^T``: ``[T, S*L*R]``), rows are masked to their own slot, and the
expand is one matmul per slice over the concatenated slots. The cost is ``L`` times the
per-adapter FLOPs, which is small next to the base projection while ``L * R`` stays well under
the hidden size; in exchange a step's work is fixed (CUDA graphs, static shapes) and a mixed
batch needs no sorting or gathering.
"""

from __future__ import annotations

import numpy as np
import torch


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


class TorchLoRAOps(LoRAOps):
    name = "torch"

    def token_tables(self, token_slots: torch.Tensor, scaling: torch.Tensor, dtype: torch.dtype,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """``own`` [N, L] (1 where the row's slot is that column) and ``token_scale`` [N, 1]."""
        slots = torch.arange(scaling.shape[0], device=token_slots.device)
        own = (token_slots.unsqueeze(1) == slots.unsqueeze(0)).to(dtype)
        valid = token_slots >= 0
        token_scale = torch.where(valid, scaling.index_select(0, token_slots.clamp(min=0)), 0.0).to(dtype)
        return own, token_scale.unsqueeze(1)

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
        t = x.shape[0]
        s_, l_, r_, k_ = lora_a.shape
        own, token_scale = tables if tables is not None else self.token_tables(token_slots, scaling, out.dtype)
        shrunk = torch.matmul(x, lora_a.view(s_ * l_ * r_, k_).t())  # [T, S*L*R]
        shrunk.view(t, s_, l_, r_).mul_(own.view(t, 1, l_, 1))  # each row keeps its own slot's columns
        rows = shrunk.view(t, s_, l_ * r_)
        off = 0
        for s, n in enumerate(slice_sizes):
            b = lora_b[:, :, off : off + n].reshape(l_ * r_, n)  # a view: [L, R] merge
            delta = torch.matmul(rows[:, s], b)  # strided rows: no copy
            out[:, off : off + n].addcmul_(delta, token_scale)
            off += n
