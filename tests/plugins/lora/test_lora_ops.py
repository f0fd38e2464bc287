"""The batched LoRA op: the PyTorch implementation against a per-token loop (the definition),
and the Triton kernels under ``TRITON_INTERPRET=1`` against the PyTorch one, on a mixed step
(base rows, several slots of different effective ranks, padded rows). On a GPU machine the
Triton test runs the kernels on the device (the lead's GPU run)."""

from __future__ import annotations

import os

import pytest
import torch
from vllm_lora.ops.torch_ops import TorchLoRAOps

from tests.conftest import import_or_require


def case(t: int = 37, k: int = 48, sizes: tuple[int, ...] = (64, 32, 32), slots: int = 3, rank: int = 16,
         dtype: torch.dtype = torch.float32, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(t, k, generator=g).to(dtype)
    a = torch.zeros(len(sizes), slots, rank, k, dtype=dtype)
    b = [torch.zeros(slots, rank, n, dtype=dtype) for n in sizes]
    for slot, r in enumerate((4, rank, 8)[:slots]):  # different effective ranks, zero-padded
        a[:, slot, :r] = torch.randn(len(sizes), r, k, generator=g).to(dtype)
        for bs in b:
            bs[slot, :r] = torch.randn(r, bs.shape[-1], generator=g).to(dtype)
    token_slots = torch.randint(-1, slots, (t,), generator=g)
    token_slots[:5] = 1  # a prefill-like segment
    token_slots[-3:] = -1  # padding rows
    scaling = torch.tensor([0.5, 2.0, 1.25][:slots], dtype=torch.float32)
    out = torch.randn(t, sum(sizes), generator=g).to(dtype)
    return out, x, a, torch.tensor(sizes), token_slots, scaling, *b


def naive(out: torch.Tensor, x: torch.Tensor, a: torch.Tensor, b: list[torch.Tensor], offsets: list[int],
          token_slots: torch.Tensor, scaling: torch.Tensor) -> torch.Tensor:
    out = out.clone()
    for t in range(x.shape[0]):
        slot = int(token_slots[t])
        if slot < 0:
            continue
        for s, (bs, off) in enumerate(zip(b, offsets)):
            delta = (x[t].double() @ a[s, slot].double().t()) @ bs[slot].double()
            out[t, off: off + bs.shape[-1]] += (delta * float(scaling[slot])).to(out.dtype)
    return out


def unpack(c: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor],
                                                 list[int], torch.Tensor, torch.Tensor]:
    out, x, a, sizes, slots, scaling, *b = c
    offsets = [int(sizes[:i].sum()) for i in range(len(sizes))]
    return out, x, a, b, offsets, slots, scaling


def packed(b: list[torch.Tensor]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """The ops' B: [L, R, N] with the slices side by side, and the slice sizes."""
    return torch.cat(b, -1), tuple(t.shape[-1] for t in b)


@pytest.mark.parametrize("sizes", [(64, 32, 32), (40,), (24, 24)])
def test_torch_ops_match_the_definition(sizes: tuple[int, ...]) -> None:
    out, x, a, b, offsets, slots, scaling = unpack(case(sizes=sizes))
    want = naive(out, x, a, b, offsets, slots, scaling)
    TorchLoRAOps().add_lora(out, x, a, *packed(b), slots, scaling)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("t", [1, 16, 37])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_ops_match_torch(t: int, dtype: torch.dtype) -> None:
    """On a GPU the kernels run on it; elsewhere under TRITON_INTERPRET=1 (set by conftest)."""
    on_gpu = torch.cuda.is_available()
    assert on_gpu or os.environ.get("TRITON_INTERPRET") == "1"
    import_or_require("triton", "triton")
    from vllm_lora.ops.triton_ops import TritonLoRAOps

    out, x, a, b, offsets, slots, scaling = unpack(case(t=t, dtype=dtype, seed=t))
    want = out.clone()
    TorchLoRAOps().add_lora(want, x, a, *packed(b), slots, scaling)
    exact = naive(out, x, a, b, offsets, slots, scaling)
    dev = torch.device("cuda" if on_gpu else "cpu")
    got = out.to(dev)
    bp, sizes = packed(b)
    TritonLoRAOps().add_lora(got, x.to(dev), a.to(dev), bp.to(dev), sizes, slots.to(dev), scaling.to(dev))
    out = got.cpu()
    if dtype == torch.float32:
        torch.testing.assert_close(out, want, rtol=1e-4 if on_gpu else 1e-5, atol=1e-3 if on_gpu else 1e-4)
    else:  # 16 bits: both within rounding of the float64 definition (Triton accumulates in float32)
        span = float(exact.float().abs().max())
        torch.testing.assert_close(out.float(), exact.float(), rtol=1e-2, atol=1e-2 * span)
        torch.testing.assert_close(want.float(), exact.float(), rtol=1e-2, atol=1e-2 * span)


@pytest.mark.parametrize("t", [1, 5, 70])
@pytest.mark.parametrize("k", [48, 300])
@pytest.mark.parametrize(("sizes", "block_m"), [((64, 32, 32), 16), ((40,), 16), ((24, 24), 16), ((64, 32, 32), 64)])
def test_triton_split_k_and_slices(t: int, k: int, sizes: tuple[int, ...], block_m: int) -> None:
    """The shrink split over K (forced: many waves wanted, K of 3 tiles) and one expand launch
    for 1-3 slices of odd widths give the definition's result (and with 64-row blocks, the
    benchmark sweep's other setting)."""
    import_or_require("triton", "triton")
    from vllm_lora.ops.triton_ops import TritonLoRAOps

    on_gpu = torch.cuda.is_available()
    dev = torch.device("cuda" if on_gpu else "cpu")
    out, x, a, b, offsets, slots, scaling = unpack(case(t=t, k=k, sizes=sizes, seed=t + k))
    if t >= 30:
        slots[10:30] = 0  # a segment of 20 rows: two blocks of one slot
    exact = naive(out, x, a, b, offsets, slots, scaling)
    ops = TritonLoRAOps()
    ops.waves, ops.block_m = 64, block_m
    bp, sz = packed(b)
    got = out.to(dev)
    ops.add_lora(got, x.to(dev), a.to(dev), bp.to(dev), sz, slots.to(dev), scaling.to(dev))
    assert ops.split_k(ops.num_blocks(t, 3), len(sizes), k, 128, dev) == (3 if k == 300 else 1)
    torch.testing.assert_close(got.cpu(), exact, rtol=1e-4, atol=1e-3 if on_gpu else 1e-4)


@pytest.mark.parametrize("source", ["device", "host"])
@pytest.mark.parametrize("t", [1, 17, 70])
def test_triton_tables_cover_each_adapter_row_once(t: int, source: str) -> None:
    """The step's blocks (computed on the device from the whole slot buffer, or on the host from
    the step's rows): each of one slot, at most BLOCK_M rows, every adapter row in exactly one
    block, base and padding rows in none, and no more blocks than the grid has programs."""
    import_or_require("triton", "triton")
    from vllm_lora.ops.triton_ops import TritonLoRAOps

    ops = TritonLoRAOps()
    g = torch.Generator().manual_seed(t)
    buf = torch.full((96,), -1, dtype=torch.int64)
    buf[:t] = torch.randint(-1, 4, (t,), generator=g)
    if source == "device":
        order, blocks = ops.token_tables(buf, torch.ones(4), torch.float32)
    else:
        host = ops.host_tables(buf[:t].numpy(), 4, 96)
        order, blocks = (torch.from_numpy(a) for a in host)
        assert blocks.shape == ops.token_tables(buf, torch.ones(4), torch.float32)[1].shape
    seen: list[int] = []
    live = [j for j in range(blocks.shape[1]) if int(blocks[0, j]) >= 0]
    assert len(live) <= ops.num_blocks(t, 4) and live == list(range(len(live)))
    for j in live:
        slot, start, end = (int(v) for v in blocks[:, j])
        rows = order[start:min(end, start + ops.block_m)].tolist()
        assert rows and all(int(buf[r]) == slot for r in rows)
        seen += rows
    assert sorted(seen) == [r for r in range(96) if int(buf[r]) >= 0]
