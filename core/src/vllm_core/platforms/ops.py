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


NATIVE_OPS = Ops()
