"""The round-1 Triton LoRA kernels (commit 4f6997b), frozen for ``lora_kernel_bench.py``'s A/B:
one shrink per projection (16-row blocks over every slot's full row range, one serial K loop per
program) and one expand launch per output slice. Not used by the engine.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from vllm_lora.ops.torch_ops import LoRAOps


@triton.jit(do_not_specialize=["num_tokens"])
def _shrink_kernel(
    x_ptr, a_ptr, y_ptr, order_ptr, seg_start_ptr, seg_len_ptr, num_tokens,
    stride_xm, stride_as, stride_al, stride_ar, stride_ys, stride_ym,
    K: tl.constexpr, NUM_SLOTS: tl.constexpr, R: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, IEEE: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_sl = tl.program_id(1)
    s = pid_sl // NUM_SLOTS
    slot = pid_sl % NUM_SLOTS
    length = tl.load(seg_len_ptr + slot)
    if pid_m * BLOCK_M >= length:
        return
    start = tl.load(seg_start_ptr + slot)
    idx = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    valid = idx < length
    rows = tl.load(order_ptr + start + idx, mask=valid, other=0).to(tl.int64)
    rr = tl.arange(0, R)
    acc = tl.zeros((BLOCK_M, R), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        xb = tl.load(x_ptr + rows[:, None] * stride_xm + kk[None, :], mask=valid[:, None] & (kk[None, :] < K), other=0.0)
        ab = tl.load(a_ptr + s * stride_as + slot * stride_al + rr[None, :] * stride_ar + kk[:, None],
                     mask=kk[:, None] < K, other=0.0)
        if IEEE:
            acc += tl.dot(xb.to(tl.float32), ab.to(tl.float32), input_precision="ieee")
        else:
            acc += tl.dot(xb.to(tl.float32), ab.to(tl.float32))
    tl.store(y_ptr + s * stride_ys + rows[:, None] * stride_ym + rr[None, :], acc, mask=valid[:, None])


@triton.jit(do_not_specialize=["num_tokens"])
def _expand_kernel(
    y_ptr, b_ptr, out_ptr, order_ptr, seg_start_ptr, seg_len_ptr, scale_ptr, num_tokens,
    stride_ym, stride_bl, stride_br, stride_om, out_offset,
    N: tl.constexpr, R: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    slot = tl.program_id(2)
    length = tl.load(seg_len_ptr + slot)
    if pid_m * BLOCK_M >= length:
        return
    start = tl.load(seg_start_ptr + slot)
    idx = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    valid = idx < length
    rows = tl.load(order_ptr + start + idx, mask=valid, other=0).to(tl.int64)
    rr = tl.arange(0, R)
    nn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    yb = tl.load(y_ptr + rows[:, None] * stride_ym + rr[None, :], mask=valid[:, None], other=0.0)
    bb = tl.load(b_ptr + slot * stride_bl + rr[:, None] * stride_br + nn[None, :], mask=nn[None, :] < N, other=0.0)
    if IEEE:
        acc = tl.dot(yb, bb.to(tl.float32), input_precision="ieee")
    else:
        acc = tl.dot(yb, bb.to(tl.float32))
    acc = acc * tl.load(scale_ptr + slot)
    optr = out_ptr + rows[:, None] * stride_om + out_offset + nn[None, :]
    omask = valid[:, None] & (nn[None, :] < N)
    cur = tl.load(optr, mask=omask, other=0.0)
    tl.store(optr, (cur.to(tl.float32) + acc).to(cur.dtype), mask=omask)


class BaselineTritonLoRAOps(LoRAOps):
    """The round-1 op, taking the current packed-B arguments."""

    name = "triton-round1"
    block_m = 16
    block_k = 32
    block_n = 64

    def token_tables(self, token_slots: torch.Tensor, scaling: torch.Tensor, dtype: torch.dtype,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(order [N] int32: rows sorted by slot, seg_start [L] int32, seg_len [L] int32)."""
        num_slots = scaling.shape[0]
        _, order = torch.sort(token_slots, stable=True)
        groups = torch.arange(-1, num_slots, device=token_slots.device)
        counts = (token_slots.unsqueeze(1) == groups.unsqueeze(0)).sum(0)  # [L + 1]: no host sync
        ends = torch.cumsum(counts, 0)
        return order.to(torch.int32), ends[:num_slots].to(torch.int32), counts[1:].to(torch.int32)

    def add_lora(
        self,
        out: torch.Tensor,
        x: torch.Tensor,
        lora_a: torch.Tensor,
        lora_b_packed: torch.Tensor,
        slice_sizes: tuple[int, ...],
        token_slots: torch.Tensor,
        scaling: torch.Tensor,
        tables: tuple[torch.Tensor, ...] | None = None,
    ) -> None:
        offsets = [sum(slice_sizes[:i]) for i in range(len(slice_sizes))]
        lora_b = [lora_b_packed[:, :, off : off + n] for off, n in zip(offsets, slice_sizes)]
        t = x.shape[0]
        if t == 0:
            return
        s_, l_, r_, k_ = lora_a.shape
        if r_ < 16 or r_ & (r_ - 1):
            raise ValueError(f"the padded LoRA rank must be a power of two >= 16 for tl.dot, got {r_}")
        order, seg_start, seg_len = tables if tables is not None else self.token_tables(token_slots, scaling, x.dtype)
        x = x if x.stride(-1) == 1 else x.contiguous()
        ieee = x.dtype == torch.float32
        y = torch.empty(s_, t, r_, dtype=torch.float32, device=x.device)
        grid_m = triton.cdiv(t, self.block_m)
        _shrink_kernel[(grid_m, s_ * l_)](
            x, lora_a, y, order, seg_start, seg_len, t,
            x.stride(0), lora_a.stride(0), lora_a.stride(1), lora_a.stride(2), y.stride(0), y.stride(1),
            K=k_, NUM_SLOTS=l_, R=r_, BLOCK_M=self.block_m, BLOCK_K=self.block_k, IEEE=ieee,
        )
        for s, (b, off) in enumerate(zip(lora_b, offsets)):
            n = b.shape[-1]
            _expand_kernel[(grid_m, triton.cdiv(n, self.block_n), l_)](
                y[s], b, out, order, seg_start, seg_len, scaling, t,
                y.stride(1), b.stride(0), b.stride(1), out.stride(0), off,
                N=n, R=r_, BLOCK_M=self.block_m, BLOCK_N=self.block_n, IEEE=ieee,
            )
