"""``TritonLoRAOps``: the batched LoRA op as two Triton launches per projection (SGMV, GPUs).

Once per step (``token_tables``, on the device, no host sync, shared by every layer) the token
rows are sorted by adapter slot and cut into blocks of ``BLOCK_M`` rows of one slot: ``order``
lists the rows slot by slot, and block ``j`` covers ``order[start_j : min(start_j + BLOCK_M,
end_j)]`` of slot ``slot_j`` (-1 past the last block). A step of ``T`` rows has at most
``cdiv(T, BLOCK_M) + min(L, T)`` blocks, so the grids below have that many rows of programs and
no slot-sized stripes of empty programs. Then, per projection of ``S`` slices (qkv 3, gate/up 2):

- ``shrink`` (one launch for all slices): program (block j, slice s, split p) multiplies the
  block's rows of ``x`` by part ``p`` of the K axis of the slot's A (``[BLOCK_M, BLOCK_K] x
  [BLOCK_K, R]`` tiles) into the float32 partial ``y[p, s, row, :R]``. Splitting K keeps a decode
  step (a few blocks) from running one long serial loop per program: the split is chosen from
  the grid so the launch fills the GPU. No atomics, no zeroed buffer: every partial is written
  exactly once.
- ``expand`` (one launch for all slices): program (block j, slice s, column block n) sums the
  split partials of its rows, multiplies by the slot's B (``[BLOCK_M, R] x [R, BLOCK_N]``),
  scales, and adds the result into the slice's columns of ``out`` in place. Every output
  element belongs to exactly one program (its row's slot), so no atomics either.

Grids depend only on the step's token count, ``S``, ``max_loras`` and the projection's shape
(the token count is ``do_not_specialize``: prefill lengths never recompile), and the tables live
in persistent buffers written in place each step, so the launches are graph-capturable. Tiles
are multiplied in float32 (tf32 tensor cores for 16-bit models, IEEE for float32 ones; 16-bit
values are exact in tf32, and Triton's interpreter has no bfloat16 dot).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
import triton
import triton.language as tl

from vllm_lora.ops.torch_ops import LoRAOps

MAX_SLICES = 3


@triton.jit
def _slice_of(s, N0: tl.constexpr, N1: tl.constexpr, N2: tl.constexpr):  # type: ignore[no-untyped-def]
    """(first column, width) of slice ``s`` in ``out`` and ``B``."""
    n = tl.where(s == 0, N0, tl.where(s == 1, N1, N2))
    off = tl.where(s == 0, 0, tl.where(s == 1, N0, N0 + N1))
    return off, n


@triton.jit(do_not_specialize=["num_tokens", "k_per_split"])
def _shrink_kernel(
    x_ptr, a_ptr, y_ptr, order_ptr, blocks_ptr, stride_blk, num_tokens,
    stride_xm, stride_as, stride_al, stride_ar, stride_yp, stride_ys, stride_ym,
    k_per_split, K: tl.constexpr, R: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, IEEE: tl.constexpr,
):
    j = tl.program_id(0)
    s = tl.program_id(1)
    p = tl.program_id(2)
    slot = tl.load(blocks_ptr + j)
    if slot < 0:
        return
    start = tl.load(blocks_ptr + stride_blk + j)
    end = tl.load(blocks_ptr + 2 * stride_blk + j)
    idx = start + tl.arange(0, BLOCK_M)
    valid = idx < end
    rows = tl.load(order_ptr + idx, mask=valid, other=0).to(tl.int64)
    rr = tl.arange(0, R)
    a_base = a_ptr + s * stride_as + slot.to(tl.int64) * stride_al
    acc = tl.zeros((BLOCK_M, R), dtype=tl.float32)
    for k0 in range(p * k_per_split, (p + 1) * k_per_split, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        kmask = kk < K
        xb = tl.load(x_ptr + rows[:, None] * stride_xm + kk[None, :], mask=valid[:, None] & kmask[None, :], other=0.0)
        ab = tl.load(a_base + rr[None, :] * stride_ar + kk[:, None], mask=kmask[:, None], other=0.0)
        if IEEE:
            acc += tl.dot(xb.to(tl.float32), ab.to(tl.float32), input_precision="ieee")
        else:
            acc += tl.dot(xb.to(tl.float32), ab.to(tl.float32))
    tl.store(y_ptr + p * stride_yp + s * stride_ys + rows[:, None] * stride_ym + rr[None, :], acc,
             mask=valid[:, None])


@triton.jit(do_not_specialize=["num_tokens", "split_k"])
def _expand_kernel(
    y_ptr, b_ptr, out_ptr, order_ptr, blocks_ptr, stride_blk, scale_ptr, num_tokens, split_k,
    stride_yp, stride_ys, stride_ym, stride_bl, stride_br, stride_om,
    N0: tl.constexpr, N1: tl.constexpr, N2: tl.constexpr, R: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, IEEE: tl.constexpr,
):
    j = tl.program_id(0)
    s = tl.program_id(1)
    pid_n = tl.program_id(2)
    slot = tl.load(blocks_ptr + j)
    if slot < 0:
        return
    off, n = _slice_of(s, N0, N1, N2)
    if pid_n * BLOCK_N >= n:
        return
    start = tl.load(blocks_ptr + stride_blk + j)
    end = tl.load(blocks_ptr + 2 * stride_blk + j)
    idx = start + tl.arange(0, BLOCK_M)
    valid = idx < end
    rows = tl.load(order_ptr + idx, mask=valid, other=0).to(tl.int64)
    rr = tl.arange(0, R)
    y_rows = y_ptr + s * stride_ys + rows[:, None] * stride_ym + rr[None, :]
    yb = tl.load(y_rows, mask=valid[:, None], other=0.0)
    for p in range(1, split_k):
        yb += tl.load(y_rows + p * stride_yp, mask=valid[:, None], other=0.0)
    nn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = nn < n
    cols = off + nn
    bb = tl.load(b_ptr + slot.to(tl.int64) * stride_bl + rr[:, None] * stride_br + cols[None, :],
                 mask=nmask[None, :], other=0.0)
    if IEEE:
        acc = tl.dot(yb, bb.to(tl.float32), input_precision="ieee")
    else:
        acc = tl.dot(yb, bb.to(tl.float32))
    acc = acc * tl.load(scale_ptr + slot)
    optr = out_ptr + rows[:, None] * stride_om + cols[None, :]
    omask = valid[:, None] & nmask[None, :]
    cur = tl.load(optr, mask=omask, other=0.0)
    tl.store(optr, (cur.to(tl.float32) + acc).to(cur.dtype), mask=omask)


@cache
def _num_sms(index: int) -> int:
    return int(torch.cuda.get_device_properties(index).multi_processor_count)


class TritonLoRAOps(LoRAOps):
    name = "triton"
    block_m = 16
    """Rows per block (the tables are cut for it): decode segments are short."""
    block_n = 128
    waves = 2
    """Programs per SM the shrink's K split aims for."""

    def token_tables(self, token_slots: torch.Tensor, scaling: torch.Tensor, dtype: torch.dtype,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """(order [N] int32: rows sorted by slot; blocks [3, NB] int32: each block's slot (-1:
        none), first and end index into ``order``), NB = ``cdiv(N, BLOCK_M) + L``."""
        num_slots = scaling.shape[0]
        n = token_slots.shape[0]
        bm = self.block_m
        dev = token_slots.device
        _, order = torch.sort(token_slots, stable=True)  # rows without an adapter (-1) first
        groups = torch.arange(-1, num_slots, device=dev)
        counts = (token_slots.unsqueeze(1) == groups.unsqueeze(0)).sum(0)  # [L + 1]: no host sync
        seg_start = torch.cumsum(counts, 0)[:num_slots]
        seg_len = counts[1:]
        nblk = (seg_len + bm - 1) // bm
        blk_end = torch.cumsum(nblk, 0)
        j = torch.arange(triton.cdiv(n, bm) + num_slots, device=dev)
        slot = torch.searchsorted(blk_end, j, right=True)
        valid = slot < num_slots
        sc = slot.clamp(max=num_slots - 1)
        start = seg_start[sc] + (j - (blk_end[sc] - nblk[sc])) * bm
        blocks = torch.stack([torch.where(valid, slot, -1), start, seg_start[sc] + seg_len[sc]])
        return order.to(torch.int32), blocks.to(torch.int32)

    def host_tables(self, rows: np.ndarray, num_slots: int, num_rows: int) -> tuple[np.ndarray, np.ndarray]:
        """``token_tables`` computed on the host from the step's slots (a few numpy calls and two
        small copies per step instead of some 30 device launches)."""
        bm = self.block_m
        order = np.argsort(rows, kind="stable").astype(np.int32)
        counts = np.bincount(rows + 1, minlength=num_slots + 1)
        seg_start = np.cumsum(counts)[:num_slots]
        seg_len = counts[1:]
        nblk = -(-seg_len // bm)
        blocks = np.zeros((3, triton.cdiv(num_rows, bm) + num_slots), dtype=np.int32)
        blocks[0] = -1
        slot = np.repeat(np.arange(num_slots), nblk)
        within = np.arange(slot.shape[0]) - np.repeat(np.cumsum(nblk) - nblk, nblk)
        blocks[0, : slot.shape[0]] = slot
        blocks[1, : slot.shape[0]] = seg_start[slot] + within * bm
        blocks[2, : slot.shape[0]] = (seg_start + seg_len)[slot]
        return order, blocks

    def num_blocks(self, num_tokens: int, num_slots: int) -> int:
        """Programs along the block axis for a step of ``num_tokens`` rows (at most this many
        blocks are non-empty)."""
        return triton.cdiv(num_tokens, self.block_m) + min(num_slots, num_tokens)

    def split_k(self, grid_blocks: int, num_slices: int, k: int, block_k: int, device: torch.device) -> int:
        """K splits for the shrink: enough programs for ``waves`` per SM, each split >= one tile."""
        sms = _num_sms(device.index or 0) if device.type == "cuda" else 4
        tiles = triton.cdiv(k, block_k)
        want = max(1, min(self.waves * sms // max(grid_blocks * num_slices, 1), tiles))
        return triton.cdiv(tiles, triton.cdiv(tiles, want))  # no split without a tile

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
        if t == 0:
            return
        s_, l_, r_, k_ = lora_a.shape
        if r_ < 16 or r_ & (r_ - 1):
            raise ValueError(f"the padded LoRA rank must be a power of two >= 16 for tl.dot, got {r_}")
        if not 1 <= s_ <= MAX_SLICES or len(slice_sizes) != s_:
            raise ValueError(f"LoRA projection with {s_} slices ({slice_sizes}): 1 to {MAX_SLICES} are supported")
        if tables is None:
            tables = self.token_tables(token_slots, scaling, x.dtype)
        order, blocks = tables
        x = x if x.stride(-1) == 1 else x.contiguous()
        ieee = x.dtype == torch.float32
        grid_blocks = self.num_blocks(t, l_)
        block_k = 128 if r_ <= 32 else 64
        split = self.split_k(grid_blocks, s_, k_, block_k, x.device)
        k_per_split = triton.cdiv(triton.cdiv(k_, block_k), split) * block_k
        y = torch.empty(split, s_, t, r_, dtype=torch.float32, device=x.device)
        _shrink_kernel[(grid_blocks, s_, split)](
            x, lora_a, y, order, blocks, blocks.stride(0), t,
            x.stride(0), lora_a.stride(0), lora_a.stride(1), lora_a.stride(2), y.stride(0), y.stride(1), y.stride(2),
            k_per_split, K=k_, R=r_,  BLOCK_M=self.block_m, BLOCK_K=block_k, IEEE=ieee,
        )
        sizes = (*slice_sizes, 0, 0)[:MAX_SLICES]
        block_n = min(self.block_n, max(16, triton.next_power_of_2(max(slice_sizes))))
        _expand_kernel[(grid_blocks, s_, triton.cdiv(max(slice_sizes), block_n))](
            y, lora_b, out, order, blocks, blocks.stride(0), scaling, t, split,
            y.stride(0), y.stride(1), y.stride(2), lora_b.stride(0), lora_b.stride(1), out.stride(0),
            N0=sizes[0], N1=sizes[1], N2=sizes[2], R=r_,
            BLOCK_M=self.block_m, BLOCK_N=block_n, IEEE=ieee,
        )
