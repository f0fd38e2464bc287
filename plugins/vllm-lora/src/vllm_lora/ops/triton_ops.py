"""``TritonLoRAOps``: the batched LoRA op as two Triton kernels (SGMV-style, GPUs).

Tiles are multiplied in float32 (tf32 tensor cores for 16-bit models, IEEE for float32 ones;
16-bit values are exact in tf32, and Triton's interpreter has no bfloat16 dot).

``shrink`` (one launch for all slices): program (token block, slice, slot) multiplies the rows
of its block that belong to its slot by that slot's A (``tl.dot`` on [BLOCK_M, BLOCK_K] x
[BLOCK_K, R] tiles) into ``y[s, t, :R]`` (float32). A program whose block holds no row of its
slot returns at once, so a prefill segment costs one slot's work per block and a decode batch
one dot per (block, present slot). ``expand`` (one launch per slice) multiplies ``y`` by the
slot's B, scales it and adds it to the slice's columns of ``out``; every output element is
written by exactly one program (its token's slot), so no atomics. The token count is
``do_not_specialize``: prefill lengths never recompile; grids depend only on the token count
and ``max_loras``, so the launches are graph-capturable (slot indices live in a persistent
buffer).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from vllm_lora.ops.torch_ops import LoRAOps


@triton.jit(do_not_specialize=["num_tokens"])
def _shrink_kernel(
    x_ptr, a_ptr, y_ptr, slots_ptr, num_tokens,
    stride_xm, stride_as, stride_al, stride_ar, stride_ys, stride_ym,
    K: tl.constexpr, NUM_SLOTS: tl.constexpr, R: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, IEEE: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_sl = tl.program_id(1)
    s = pid_sl // NUM_SLOTS
    slot = pid_sl % NUM_SLOTS
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    slots = tl.load(slots_ptr + rows, mask=rows < num_tokens, other=-1)
    match = slots == slot
    if tl.max(match.to(tl.int32), axis=0) == 0:
        return
    rr = tl.arange(0, R)
    acc = tl.zeros((BLOCK_M, R), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        xb = tl.load(x_ptr + rows[:, None] * stride_xm + kk[None, :], mask=match[:, None] & (kk[None, :] < K), other=0.0)
        ab = tl.load(a_ptr + s * stride_as + slot * stride_al + rr[None, :] * stride_ar + kk[:, None],
                     mask=kk[:, None] < K, other=0.0)
        # float32 tiles (tf32 on tensor cores unless IEEE): exact products of 16-bit inputs
        if IEEE:
            acc += tl.dot(xb.to(tl.float32), ab.to(tl.float32), input_precision="ieee")
        else:
            acc += tl.dot(xb.to(tl.float32), ab.to(tl.float32))
    tl.store(y_ptr + s * stride_ys + rows[:, None] * stride_ym + rr[None, :], acc, mask=match[:, None])


@triton.jit(do_not_specialize=["num_tokens"])
def _expand_kernel(
    y_ptr, b_ptr, out_ptr, slots_ptr, scale_ptr, num_tokens,
    stride_ym, stride_bl, stride_br, stride_om, out_offset,
    N: tl.constexpr, NUM_SLOTS: tl.constexpr, R: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    slot = tl.program_id(2)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    slots = tl.load(slots_ptr + rows, mask=rows < num_tokens, other=-1)
    match = slots == slot
    if tl.max(match.to(tl.int32), axis=0) == 0:
        return
    rr = tl.arange(0, R)
    nn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    yb = tl.load(y_ptr + rows[:, None] * stride_ym + rr[None, :], mask=match[:, None], other=0.0)
    bb = tl.load(b_ptr + slot * stride_bl + rr[:, None] * stride_br + nn[None, :], mask=nn[None, :] < N, other=0.0)
    if IEEE:
        acc = tl.dot(yb, bb.to(tl.float32), input_precision="ieee")
    else:
        acc = tl.dot(yb, bb.to(tl.float32))
    acc = acc * tl.load(scale_ptr + slot)
    optr = out_ptr + rows[:, None] * stride_om + out_offset + nn[None, :]
    omask = match[:, None] & (nn[None, :] < N)
    cur = tl.load(optr, mask=omask, other=0.0)
    tl.store(optr, (cur.to(tl.float32) + acc).to(cur.dtype), mask=omask)


class TritonLoRAOps(LoRAOps):
    name = "triton"
    block_m = 16
    block_k = 32
    block_n = 64

    def add_lora(
        self,
        out: torch.Tensor,
        x: torch.Tensor,
        lora_a: torch.Tensor,
        lora_b: list[torch.Tensor],
        offsets: list[int],
        token_slots: torch.Tensor,
        scaling: torch.Tensor,
        tables: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        t = x.shape[0]
        if t == 0:
            return
        s_, l_, r_, k_ = lora_a.shape
        if r_ < 16 or r_ & (r_ - 1):
            raise ValueError(f"the padded LoRA rank must be a power of two >= 16 for tl.dot, got {r_}")
        x = x if x.stride(-1) == 1 else x.contiguous()
        ieee = x.dtype == torch.float32
        y = torch.empty(s_, t, r_, dtype=torch.float32, device=x.device)
        grid_m = triton.cdiv(t, self.block_m)
        _shrink_kernel[(grid_m, s_ * l_)](
            x, lora_a, y, token_slots, t,
            x.stride(0), lora_a.stride(0), lora_a.stride(1), lora_a.stride(2), y.stride(0), y.stride(1),
            K=k_, NUM_SLOTS=l_, R=r_, BLOCK_M=self.block_m, BLOCK_K=self.block_k, IEEE=ieee,
        )
        for s, (b, off) in enumerate(zip(lora_b, offsets)):
            n = b.shape[-1]
            _expand_kernel[(grid_m, triton.cdiv(n, self.block_n), l_)](
                y[s], b, out, token_slots, scaling, t,
                y.stride(1), b.stride(0), b.stride(1), out.stride(0), off,
                N=n, NUM_SLOTS=l_, R=r_, BLOCK_M=self.block_m, BLOCK_N=self.block_n, IEEE=ieee,
            )
