"""``CPUOps``: the native ops on this package's C kernels where they are faster on the CPU.

Each override computes the same formula as ``vllm_core.platforms.ops.Ops`` (float32
statistics, the same rounding points), so results match the native op to the last bit or
within float32 rounding (summation order). Without the kernels (``kernels is None``: no AVX-512
BF16, no compiler, or ``VLLM_CPU_KERNELS=0``) the ops fall back to fused ATen calls.

Linear layers run on a copy of their weight packed into panels of 32 output features
(``pack_weight``), made at the first call and kept while the weight lives: one C kernel serves
one row (streaming the weight once, at the memory's bandwidth) up to thousands of rows (12 x 32
register tiles: ~115 GFLOP/s a core in float32, ~225 in bfloat16, against 95 for MKL and 210
for oneDNN here). The copies double the weights' memory; past ``VLLM_CPU_PACK_MAX_BYTES``
(default 4 GiB) further layers run on ``F.linear``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import weakref
from collections.abc import Callable

import torch
import torch.nn.functional as F

from vllm_core.plugins.api import Ops
from vllm_cpu.amx import ONEDNN, OURS, TIMING_MAX_ROWS, LinearDispatch
from vllm_cpu.kernels import Kernels, pack_weight
from vllm_cpu.plan import callback_failed, trusted_ops
from vllm_cpu.quant import linear_q, quantized

logger = logging.getLogger(__name__)

ENV_PACK_MAX_BYTES = "VLLM_CPU_PACK_MAX_BYTES"
DEFAULT_PACK_MAX_BYTES = 4 << 30

_KERNEL_DTYPES = (torch.float32, torch.bfloat16)
LORA_MAX_RANK = 512
"""The largest (padded) LoRA rank ``vc_lora`` takes (``LORA_MAX_RANK`` of the C side)."""

MLP_TILE_ROWS = 192
"""Rows per tile of ``silu_mlp``: two of the GEMM's 96-row tiles; the [192, 2 * inter]
intermediate (2.4 MB for SmolLM2 in float32) stays in the last-level cache."""


_CALLBACK_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int)


def _mm_into(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor) -> None:
    """y = x @ weight^T (+ bias) by PyTorch's CPU matmul (oneDNN for bfloat16)."""
    if bias is None:
        torch.mm(x, weight.t(), out=y)
    else:
        torch.addmm(bias, x, weight.t(), out=y)


class CPUOps(Ops):
    """Native ops on the C kernels (or ``aten::rms_norm`` and an in-place SiLU-and-mul without
    them)."""

    def __init__(self, kernels: Kernels | None = None) -> None:
        self.kernels = kernels
        self.lib = kernels.lib if kernels is not None else None
        """The kernels' ctypes library, through which every kernel call of these ops goes (a
        ``vllm_cpu.plan`` recorder stands in for it while a plan is captured)."""
        self._packed: dict[int, tuple[weakref.ref[torch.Tensor], torch.Tensor | None]] = {}
        self._packed_bytes = 0
        self._pack_max_bytes = int(os.environ.get(ENV_PACK_MAX_BYTES, "") or DEFAULT_PACK_MAX_BYTES)
        self._scratch_buf = torch.empty(0, dtype=torch.uint8)
        self.dispatch = LinearDispatch.from_env() if kernels is not None else LinearDispatch("off")
        """Our bf16 kernel or oneDNN's matmul (AMX) for batched bfloat16 rows (``vllm_cpu.amx``)."""
        self._callbacks: list[object] = []

    # ------------------------------------------------------------------------------ linear
    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        qw = quantized(weight)
        if qw is not None:
            # GGUF blocks kept packed (vllm_cpu.gguf_quant); only attached where the kernels run
            if bias is not None and (bias.dtype != x.dtype or not bias.is_contiguous()):
                bias = bias.to(x.dtype).contiguous()
            return linear_q(self.lib, x, qw, bias)
        packed = self.packed_weight(weight) if x.dtype == weight.dtype else None
        if packed is None or (bias is not None and (bias.dtype != x.dtype or not bias.is_contiguous())):
            return F.linear(x, weight, bias)
        n, k = weight.shape
        x2 = x if x.dim() == 2 else x.reshape(-1, k)
        if x2.stride(-1) != 1:
            x2 = x2.contiguous()
        m = x2.shape[0]
        y = torch.empty(m, n, dtype=x.dtype)
        if x.dtype == torch.bfloat16 and self._onednn_wins(x2, weight, packed, bias):
            self._onednn_linear(x2, weight, bias, y)
        else:
            self.lib.vc_linear_packed(  # type: ignore[union-attr]
                x2.data_ptr(), x2.stride(0), packed.data_ptr(), None if bias is None else bias.data_ptr(),
                y.data_ptr(), n, m, n, k, x.dtype == torch.bfloat16,
            )
        return y if x.dim() == 2 else y.view(*x.shape[:-1], n)

    def _onednn_wins(
        self, x2: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None
    ) -> bool:
        """Whether this bfloat16 call goes to oneDNN (``self.dispatch``: per shape, timed once)."""
        if not self.dispatch.active:
            return False
        n, k = weight.shape

        def calls() -> dict[str, Callable[[], object]]:
            xt = x2[:TIMING_MAX_ROWS]
            yt = torch.empty(xt.shape[0], n, dtype=x2.dtype)

            def ours() -> None:
                self.kernels.lib.vc_linear_packed(  # type: ignore[union-attr]
                    xt.data_ptr(), xt.stride(0), packed.data_ptr(), None if bias is None else bias.data_ptr(),
                    yt.data_ptr(), n, xt.shape[0], n, k, True,
                )

            def onednn() -> None:
                self._mm_on_pool(xt, weight, bias, yt)

            return {OURS: ours, ONEDNN: onednn}

        with trusted_ops():  # timing at the first call of a shape may happen inside a plan capture
            return self.dispatch.choose(n, k, x2.shape[0], calls) == ONEDNN

    def _onednn_linear(
        self, x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor
    ) -> None:
        """y = x2 @ weight^T (+ bias) by PyTorch's matmul (oneDNN: AMX tiles where present).
        While a plan is recorded (``self.lib`` is its recorder) the call goes through
        ``vc_callback`` so the plan replays it; the plan keeps the callback."""
        if self.kernels is None or self.lib is self.kernels.lib:
            self._mm_on_pool(x2, weight, bias, y)
            return

        def run(_ctx: object, _i: int) -> None:
            try:
                with trusted_ops(), torch.inference_mode():
                    self._mm_on_pool(x2, weight, bias, y)
            except Exception as exc:  # noqa: BLE001 - a ctypes callback cannot raise into C: Plan.run raises it
                callback_failed(exc)

        callback = _CALLBACK_FN(run)
        self._callbacks.append(callback)
        self.lib.vc_callback(ctypes.cast(callback, ctypes.c_void_p).value, 0)  # type: ignore[union-attr]

    def _mm_on_pool(
        self, x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor
    ) -> None:
        """``_mm_into`` in chunks on the kernels' pool, one PyTorch thread each: PyTorch's own
        OpenMP team waits at a barrier for a descheduled thread (on this shared VM a 2-thread
        bf16 matmul took ~11 ms for any shape at load ~3, 0.1-2 ms on one thread). Rows are split
        where there are many, else output columns (through a per-chunk buffer)."""
        kernels = self.kernels
        m, n = y.shape
        threads = kernels.num_threads if kernels is not None else 1
        if threads == 1 or kernels is None or kernels.solo() or m * n < 4096:
            _mm_into(x2, weight, bias, y)
            return
        if m >= 16 * threads:
            step = -(-m // (2 * threads))

            def rows(i: int) -> None:
                r0, r1 = i * step, min(m, (i + 1) * step)
                if r0 < r1:
                    _mm_into(x2[r0:r1], weight, bias, y[r0:r1])

            kernels.parallel(rows, -(-m // step))
            return
        cstep = -(-n // (2 * threads) // 64) * 64

        def cols(i: int) -> None:
            c0, c1 = i * cstep, min(n, (i + 1) * cstep)
            if c0 < c1:
                part = torch.empty(m, c1 - c0, dtype=y.dtype)
                _mm_into(x2, weight[c0:c1], None if bias is None else bias[c0:c1], part)
                y[:, c0:c1].copy_(part)

        kernels.parallel(cols, -(-n // cstep))

    def take_callbacks(self) -> list[object]:
        """The Python callbacks that kernel calls recorded since the last call point to (a plan
        keeps them alive while it lives)."""
        out, self._callbacks = self._callbacks, []
        return out

    def packed_weight(self, weight: torch.Tensor) -> torch.Tensor | None:
        """The panel layout of ``weight``, packed at the first call (None: no kernels, a dtype
        or shape they do not take, or over ``VLLM_CPU_PACK_MAX_BYTES``)."""
        entry = self._packed.get(id(weight))
        if entry is not None and entry[0]() is weight:
            return entry[1]
        packed = None
        if (
            self.lib is not None and weight.dtype in _KERNEL_DTYPES and weight.dim() == 2
            and weight.is_contiguous() and (weight.dtype != torch.bfloat16 or weight.shape[1] % 2 == 0)
        ):
            size = weight.numel() * weight.element_size()
            if self._packed_bytes + size <= self._pack_max_bytes:
                packed = pack_weight(weight)
                self._packed_bytes += size
            else:
                logger.warning(
                    "packed weights would pass %s=%d bytes: this layer runs on F.linear (slower); "
                    "raise the limit if memory allows", ENV_PACK_MAX_BYTES, self._pack_max_bytes,
                )
        self._packed[id(weight)] = (weakref.ref(weight), packed)
        return packed

    def embedding(self, input_ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        lib = self.lib
        if lib is None or input_ids.dtype != torch.int64 or not input_ids.is_contiguous() or not weight.is_contiguous():
            return F.embedding(input_ids, weight)
        out = torch.empty(*input_ids.shape, weight.shape[1], dtype=weight.dtype)
        row_bytes = weight.shape[1] * weight.element_size()
        bad = lib.vc_embedding(input_ids.data_ptr(), input_ids.numel(), weight.data_ptr(), weight.shape[0], row_bytes, out.data_ptr())
        if bad:
            return F.embedding(input_ids, weight)  # raises IndexError naming the id
        return out

    def lora_tables(
        self, token_slots: torch.Tensor, scaling: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, ...] | None:
        return None if self.lib is not None else super().lora_tables(token_slots, scaling, dtype)

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
        """``vc_lora``: each adapter row does its own adapter's work only (the native op does
        every slot's, masked), and the slots are read when the call runs, so a recorded plan
        holding the call serves any mix of adapters. Shapes it does not take go to the native op."""
        lib = self.lib
        dtype = out.dtype
        if (
            lib is None or dtype not in _KERNEL_DTYPES or out.dim() != 2 or x.dim() != 2
            or any(t.dtype != dtype for t in (x, lora_a, lora_b)) or out.stride(1) != 1 or x.stride(1) != 1
            or not (lora_a.is_contiguous() and lora_b.is_contiguous() and token_slots.is_contiguous())
            or token_slots.dtype != torch.int64 or scaling.dtype != torch.float32 or not scaling.is_contiguous()
            or not 1 <= len(slice_sizes) <= 3 or lora_a.shape[0] != len(slice_sizes)
            or sum(slice_sizes) != out.shape[1] or lora_a.shape[2] > LORA_MAX_RANK
        ):
            # ``tables`` are the native ones without the kernels, None with them (``lora_tables``)
            super().add_lora(out, x, lora_a, lora_b, slice_sizes, token_slots, scaling, tables)
            return
        s_, l_, r_, k_ = lora_a.shape
        n0, n1 = slice_sizes[0], slice_sizes[1] if len(slice_sizes) > 1 else 0
        lib.vc_lora(
            out.data_ptr(), out.stride(0), x.data_ptr(), x.stride(0), lora_a.data_ptr(), lora_b.data_ptr(),
            token_slots.data_ptr(), scaling.data_ptr(), x.shape[0], k_, r_, l_, out.shape[1], n0, n1,
            dtype == torch.bfloat16,
        )

    def keep_alive(self) -> list[torch.Tensor]:
        """Buffers of this instance that kernel calls point into besides their arguments' own
        tensors (the scratch of ``silu_mlp``): a recorded plan holds them, as the instance may
        replace them later."""
        return [self._scratch_buf]

    # ------------------------------------------------------------------------- elementwise
    def _rows(self, x: torch.Tensor, weight: torch.Tensor) -> tuple[int, int] | None:
        """(rows, elements between rows) when the C kernels can take x, else None."""
        if self.lib is None or x.dtype not in _KERNEL_DTYPES or weight.dtype != x.dtype or x.stride(-1) != 1:
            return None
        if x.dim() == 1:
            return 1, x.shape[0]
        if x.dim() == 2:
            return x.shape[0], x.stride(0)
        return (x.numel() // x.shape[-1], x.shape[-1]) if x.is_contiguous() else None

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        rows = self._rows(x, weight)
        if rows is not None:
            out = torch.empty(x.shape, dtype=x.dtype)
            self.lib.vc_rms_norm(  # type: ignore[union-attr]
                x.data_ptr(), rows[1], None, weight.data_ptr(), out.data_ptr(), rows[0], x.shape[-1], eps,
                x.dtype == torch.bfloat16,
            )
            return out
        shape = (x.shape[-1],)
        if x.dtype == torch.float32 and weight.dtype == torch.float32:
            # One fused kernel: normalise and scale.
            return F.rms_norm(x, shape, weight, eps=eps)
        # Half precision: float32 statistics, round, then scale in the model dtype, as the native
        # op does (aten's half kernel would scale before rounding); ~2x faster than the native op.
        return weight * F.rms_norm(x.float(), shape, eps=eps).to(x.dtype)

    def fused_add_rms_norm(
        self, x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self._rows(x, weight)
        if rows is None or residual.dtype != x.dtype or residual.shape != x.shape or not residual.is_contiguous():
            return super().fused_add_rms_norm(x, residual, weight, eps)
        out = torch.empty(x.shape, dtype=x.dtype)
        # The sum goes into residual in place: the layer passes its own buffer and keeps only the
        # returned one, so no new [T, hidden] tensor per layer.
        self.lib.vc_rms_norm(  # type: ignore[union-attr]
            x.data_ptr(), rows[1], residual.data_ptr(), weight.data_ptr(), out.data_ptr(), rows[0], x.shape[-1],
            eps, x.dtype == torch.bfloat16,
        )
        return out, residual

    def rotary_embedding(
        self,
        positions: torch.Tensor,
        q: torch.Tensor,
        k: torch.Tensor,
        cos_sin_cache: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lib = self.lib
        if (
            lib is None or q.dtype not in _KERNEL_DTYPES or k.dtype != q.dtype or q.dim() != 3 or k.dim() != 3
            or q.stride(2) != 1 or k.stride(2) != 1 or q.stride(1) != q.shape[2] or k.stride(1) != k.shape[2]
            or positions.dtype != torch.int64 or cos_sin_cache.dtype != torch.float32
        ):
            return super().rotary_embedding(positions, q, k, cos_sin_cache)
        # In place: q and k are this step's own projections.
        positions = positions.contiguous()
        lib.vc_rotary(
            q.data_ptr(), q.stride(0), k.data_ptr(), k.stride(0), q.shape[0], q.shape[1], k.shape[1], q.shape[2],
            positions.data_ptr(), cos_sin_cache.data_ptr(), q.dtype == torch.bfloat16,
        )
        return q, k

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
        """Three C calls: the per-head norms of q and k into new contiguous tensors, then the
        rotary embedding on those, in place."""
        lib = self.lib
        if (
            lib is None or q.dtype not in _KERNEL_DTYPES or k.dtype != q.dtype or q.dim() != 3 or k.dim() != 3
            or q_weight.dtype != q.dtype or k_weight.dtype != q.dtype
            or q.stride(2) != 1 or k.stride(2) != 1 or q.stride(1) != q.shape[2] or k.stride(1) != k.shape[2]
            or positions.dtype != torch.int64 or cos_sin_cache.dtype != torch.float32
        ):
            return super().qk_norm_rotary(positions, q, k, q_weight, k_weight, eps, cos_sin_cache)
        bf16 = q.dtype == torch.bfloat16
        (t, hq, d), hk = q.shape, k.shape[1]
        qn, kn = torch.empty(t, hq, d, dtype=q.dtype), torch.empty(t, hk, d, dtype=k.dtype)
        lib.vc_head_rms_norm(q.data_ptr(), q.stride(0), q_weight.data_ptr(), qn.data_ptr(), t, hq, d, eps, bf16)
        lib.vc_head_rms_norm(k.data_ptr(), k.stride(0), k_weight.data_ptr(), kn.data_ptr(), t, hk, d, eps, bf16)
        return self.rotary_embedding(positions, qn, kn, cos_sin_cache)

    def silu_and_mul(self, x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1] // 2
        if self.lib is not None and x.dtype in _KERNEL_DTYPES and x.is_contiguous():
            out = torch.empty(*x.shape[:-1], d, dtype=x.dtype)
            self.lib.vc_silu_and_mul(x.data_ptr(), out.data_ptr(), x.numel() // x.shape[-1], d, x.dtype == torch.bfloat16)
            return out
        # silu allocates the output; multiplying into it saves a second [.., d] buffer.
        return F.silu(x[..., :d]).mul_(x[..., d:])

    def silu_mlp(
        self,
        x: torch.Tensor,
        gate_up_weight: torch.Tensor,
        down_weight: torch.Tensor,
        gate_up_bias: torch.Tensor | None = None,
        down_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One C call: row tiles of MLP_TILE_ROWS go through gate/up, SiLU-and-mul and down with
        the intermediates in a scratch buffer that stays in cache (see ``vc_silu_mlp``)."""
        dtype = x.dtype
        rows = x.numel() // max(x.shape[-1], 1) if x.dim() else 0
        if (
            quantized(gate_up_weight) is not None or quantized(down_weight) is not None
            or (dtype == torch.bfloat16 and self.dispatch.active and rows >= 8)
        ):
            # per projection: the quantized kernel (each quantizes its input rows to int8), or
            # batched bf16 rows whose projections may each go to oneDNN (vllm_cpu.amx)
            return self.linear(self.silu_and_mul(self.linear(x, gate_up_weight, gate_up_bias)), down_weight, down_bias)
        inter, hidden = gate_up_weight.shape[0] // 2, gate_up_weight.shape[1]
        wp_gu = self.packed_weight(gate_up_weight) if gate_up_weight.dtype == dtype else None
        wp_d = self.packed_weight(down_weight) if down_weight.dtype == dtype else None
        biases_ok = all(
            b is None or (b.dtype == dtype and b.is_contiguous()) for b in (gate_up_bias, down_bias)
        )
        if wp_gu is None or wp_d is None or not biases_ok or x.dim() == 0 or x.shape[-1] != hidden:
            return super().silu_mlp(x, gate_up_weight, down_weight, gate_up_bias, down_bias)
        x2 = x.reshape(-1, hidden)
        if x2.stride(-1) != 1:
            x2 = x2.contiguous()
        m = x2.shape[0]
        tile = min(m, MLP_TILE_ROWS)
        scratch = self._scratch(tile * 3 * inter * x.element_size())
        y = torch.empty(m, hidden, dtype=dtype)
        self.lib.vc_silu_mlp(  # type: ignore[union-attr]
            x2.data_ptr(), x2.stride(0), wp_gu.data_ptr(), None if gate_up_bias is None else gate_up_bias.data_ptr(),
            wp_d.data_ptr(), None if down_bias is None else down_bias.data_ptr(), y.data_ptr(), hidden, m, hidden,
            inter, dtype == torch.bfloat16, scratch.data_ptr(), tile,
        )
        return y.view(*x.shape[:-1], hidden)

    def _scratch(self, nbytes: int) -> torch.Tensor:
        """This instance's scratch bytes, grown on demand and kept (one engine per instance)."""
        if self._scratch_buf.numel() < nbytes:
            self._scratch_buf = torch.empty(nbytes, dtype=torch.uint8)
        return self._scratch_buf

    def reshape_and_cache(
        self,
        key: torch.Tensor,
        value: torch.Tensor,
        key_cache: torch.Tensor,
        value_cache: torch.Tensor,
        slot_mapping: torch.Tensor,
    ) -> None:
        lib = self.lib
        hk, d = key.shape[1], key.shape[2]
        if (
            lib is None or key.dtype != key_cache.dtype or value.dtype != value_cache.dtype
            or key.stride(2) != 1 or key.stride(1) != d or value.stride(2) != 1 or value.stride(1) != d
            or not key_cache.is_contiguous() or not value_cache.is_contiguous() or slot_mapping.dtype != torch.int64
        ):
            return super().reshape_and_cache(key, value, key_cache, value_cache, slot_mapping)
        es = key.element_size()
        slot_mapping = slot_mapping.contiguous()
        lib.vc_cache_write(
            key.data_ptr(), key.stride(0) * es, value.data_ptr(), value.stride(0) * es,
            key_cache.data_ptr(), value_cache.data_ptr(), slot_mapping.data_ptr(), key.shape[0], hk * d * es,
        )
        return None
