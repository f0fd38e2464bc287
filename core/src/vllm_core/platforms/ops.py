"""Named ops with their native (pure PyTorch) implementations.

A platform subclasses ``Ops`` and overrides what it can do faster; whatever it leaves alone
falls back to these definitions, which are also the oracle of the conformance kit. They follow
Hugging Face ``transformers`` numerics (float32 accumulation of RMSNorm, neox-style rotary).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class Ops:
    """Kernels the model layers call. Every method has a native fallback."""

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x @ weight^T + bias``. x: [..., in]; weight: [out, in] -> [..., out]."""
        return F.linear(x, weight, bias)

    def embedding(self, input_ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Rows of ``weight`` [vocab, hidden] at ``input_ids`` (int64) -> [..., hidden]; an id
        outside ``[0, vocab)`` raises ``IndexError``."""
        return F.embedding(input_ids, weight)

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """``x * rsqrt(mean(x^2) + eps) * weight`` with float32 statistics. x: [..., hidden]."""
        dtype = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        return weight * xf.to(dtype)

    def fused_add_rms_norm(
        self, x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``residual = x + residual``; returns ``(rms_norm(residual), residual)``."""
        residual = x + residual
        return self.rms_norm(residual, weight, eps), residual

    def rotary_embedding(
        self,
        positions: torch.Tensor,
        q: torch.Tensor,
        k: torch.Tensor,
        cos_sin_cache: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Neox-style rotary embedding (rotate halves).

        positions: [T] int64; q: [T, Hq, D]; k: [T, Hk, D];
        cos_sin_cache: [max_pos, D] float32, cos in the first D/2 columns, sin in the rest.
        """
        cos_sin = cos_sin_cache.index_select(0, positions)
        half = cos_sin.shape[-1] // 2
        cos = cos_sin[:, :half].unsqueeze(1)
        sin = cos_sin[:, half:].unsqueeze(1)

        def rotate(x: torch.Tensor) -> torch.Tensor:
            xf = x.float()
            x1, x2 = xf[..., :half], xf[..., half:]
            return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)

        return rotate(q), rotate(k)

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
        """Per-head RMSNorm of q and k (Qwen3), then the rotary embedding.

        Equals ``rotary_embedding(positions, rms_norm(q, q_weight, eps), rms_norm(k, k_weight,
        eps), cos_sin_cache)``; one op so that a platform can fuse the three (they are small,
        memory-bound launches on every layer). q: [T, Hq, D], k: [T, Hk, D] (possibly strided
        views of a fused QKV output); q_weight, k_weight: [D].
        """
        return self.rotary_embedding(
            positions, self.rms_norm(q, q_weight, eps), self.rms_norm(k, k_weight, eps), cos_sin_cache
        )

    def silu_and_mul(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., 2 * d] (gate, up) -> silu(gate) * up: [..., d]."""
        d = x.shape[-1] // 2
        return F.silu(x[..., :d]) * x[..., d:]

    def silu_mlp(
        self,
        x: torch.Tensor,
        gate_up_weight: torch.Tensor,
        down_weight: torch.Tensor,
        gate_up_bias: torch.Tensor | None = None,
        down_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The gated (SwiGLU) MLP: ``down(silu(gate) * up)`` where gate | up are the two halves of
        ``x @ gate_up_weight^T (+ gate_up_bias)``. x: [..., hidden]; gate_up_weight:
        [2 * inter, hidden]; down_weight: [hidden, inter] -> [..., hidden].

        Equals ``linear(silu_and_mul(linear(x, gate_up_weight, gate_up_bias)), down_weight,
        down_bias)``; one op so that a platform can keep the [tokens, 2 * inter] intermediate out
        of main memory (the largest activation of a prefill step).
        """
        return self.linear(self.silu_and_mul(self.linear(x, gate_up_weight, gate_up_bias)), down_weight, down_bias)

    def reshape_and_cache(
        self,
        key: torch.Tensor,
        value: torch.Tensor,
        key_cache: torch.Tensor,
        value_cache: torch.Tensor,
        slot_mapping: torch.Tensor,
    ) -> None:
        """Write new KV into the paged cache.

        key/value: [T, Hk, D]; key_cache/value_cache: [num_blocks, block_size, Hk, D];
        slot_mapping: [T] int64, slot = block_id * block_size + offset; -1 skips the row.
        """
        # No host sync (no ``.all()`` / masking by a device tensor): skipped rows are sent to the
        # slot of the first written row with that row's values, so the duplicate writes agree;
        # when no row is written they rewrite slot 0 with what it holds.
        num_blocks, block_size = key_cache.shape[:2]
        k_flat = key_cache.view(num_blocks * block_size, *key_cache.shape[2:])
        v_flat = value_cache.view(num_blocks * block_size, *value_cache.shape[2:])
        valid = slot_mapping >= 0
        # ``first`` stays a 1-element tensor: indexing by a 0-dim tensor reads it on the host.
        first = torch.argmax(valid.to(torch.int32)).view(1)
        any_valid = valid.any()
        target = torch.where(
            valid, slot_mapping, torch.where(any_valid, slot_mapping.index_select(0, first), 0).clamp(min=0)
        )
        keep = valid.view(-1, *([1] * (key.dim() - 1)))
        k_fill = torch.where(any_valid, key.index_select(0, first)[0], k_flat[0]).to(key.dtype)
        v_fill = torch.where(any_valid, value.index_select(0, first)[0], v_flat[0]).to(value.dtype)
        k_flat.index_copy_(0, target, torch.where(keep, key, k_fill))
        v_flat.index_copy_(0, target, torch.where(keep, value, v_fill))

    # ---------------------------------------------------------------------------- LoRA (Punica)
    def lora_tables(
        self, token_slots: torch.Tensor, scaling: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, ...] | None:
        """Per-step tables that ``add_lora`` may take instead of deriving them in every layer,
        computed once a step from the whole persistent ``token_slots`` buffer ([N] int64, rows
        past the step's -1) and ``scaling`` ([L] float32); None where the platform needs none.
        Native: ``own`` [N, L] (1 where the row's slot is that column) and ``token_scale``
        [N, 1] (the row's slot's scaling, 0 for base rows), in ``dtype``."""
        return _lora_tables(token_slots, scaling, dtype)

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
        """Batched LoRA (Punica's BGMV), in place: for every row ``t`` whose slot ``l =
        token_slots[t]`` is >= 0, ``out[t, slice s] += scaling[l] * (x[t] @ lora_a[s, l]^T) @
        lora_b[l][:, slice s]``. out: [T, N]; x: [T, in]; lora_a: [S, L, R, in]; lora_b: [L, R, N]
        (B transposed, the slices side by side: slice s is ``slice_sizes[s]`` columns after the
        ones before it); token_slots: [T] int64 (-1: no adapter); scaling: [L] float32;
        ``tables``: this step's ``lora_tables`` rows ``[:T]`` (None: derived here; a platform
        kernel that falls back to this definition passes None).

        No host sync and no shape that depends on the step's adapters (graphs replay it).
        Native: the shrink runs against every slot at once (``[T, S*L*R]``), each row keeps its
        own slot's columns, and the expand is one matmul per slice over the concatenated slots:
        ``L`` times a row's own FLOPs, small next to the base projection while ``L * R`` stays
        well under the hidden size. A platform kernel may do each row's own work only.
        """
        t = x.shape[0]
        s_, l_, r_, k_ = lora_a.shape
        own, token_scale = tables if tables is not None else _lora_tables(token_slots, scaling, out.dtype)
        shrunk = torch.matmul(x, lora_a.view(s_ * l_ * r_, k_).t())  # [T, S*L*R]
        shrunk.view(t, s_, l_, r_).mul_(own.view(t, 1, l_, 1))  # each row keeps its own slot's columns
        rows = shrunk.view(t, s_, l_ * r_)
        off = 0
        for s, n in enumerate(slice_sizes):
            b = lora_b[:, :, off : off + n].reshape(l_ * r_, n)  # a view: [L, R] merge
            delta = torch.matmul(rows[:, s], b)  # strided rows: no copy
            out[:, off : off + n].addcmul_(delta, token_scale)
            off += n


def _lora_tables(token_slots: torch.Tensor, scaling: torch.Tensor, dtype: torch.dtype,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """The native ``Ops.lora_tables``: ``own`` [N, L] and ``token_scale`` [N, 1]."""
    slots = torch.arange(scaling.shape[0], device=token_slots.device)
    own = (token_slots.unsqueeze(1) == slots.unsqueeze(0)).to(dtype)
    valid = token_slots >= 0
    token_scale = torch.where(valid, scaling.index_select(0, token_slots.clamp(min=0)), 0.0).to(dtype)
    return own, token_scale.unsqueeze(1)


NATIVE_OPS = Ops()
