"""``TritonSampler``: one fused pass over the logits for temperature / greedy sampling.

The reference pipeline makes about ten passes over a float32 copy of ``[rows, vocab]`` logits
(softmax, exponential noise, division, argmax); at 256 rows x 152k vocabulary that is most of a
millisecond per step. Sampling from ``softmax(logits / T)`` equals taking
``argmax(logits / T + Gumbel noise)``, which one kernel does while reading the logits once, with
the noise drawn in-kernel (Philox, seeded per step and row; no host synchronisation).

Batches that need more (top-k / top-p / min-p, per-request seeds, which promise the reference
sampler's exact per-request streams) take the reference pipeline; logits processors (penalties,
bias, bans) run first either way.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import triton
import triton.language as tl

from vllm_core.sample.metadata import SamplingMetadata
from vllm_core.sample.sampler import ReferenceSampler, apply_logits_processors


@triton.jit
def _gumbel_argmax_kernel(
    logits_ptr, temp_ptr, out_ptr, seed, vocab, stride_row,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)
    temp = tl.load(temp_ptr + row)
    greedy = temp <= 0.0
    inv_t = tl.where(greedy, 1.0, 1.0 / tl.where(greedy, 1.0, temp))
    best_val = tl.full([BLOCK], float("-inf"), tl.float32)
    best_idx = tl.zeros([BLOCK], tl.int32)
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < vocab
        x = tl.load(logits_ptr + row * stride_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
        u = tl.rand(seed, row * vocab + cols)
        u = tl.minimum(tl.maximum(u, 1e-10), 1.0 - 1e-7)
        gumbel = -tl.log(-tl.log(u))
        score = tl.where(greedy, x, x * inv_t + gumbel)
        score = tl.where(mask, score, float("-inf"))
        better = score > best_val
        best_val = tl.where(better, score, best_val)
        best_idx = tl.where(better, cols, best_idx)
    top = tl.max(best_val, axis=0)
    # lowest index among ties, as torch.argmax
    idx = tl.min(tl.where(best_val == top, best_idx, vocab), axis=0)
    tl.store(out_ptr + row, idx.to(tl.int64))


def gumbel_argmax(logits: torch.Tensor, temperature: torch.Tensor, seed: int) -> torch.Tensor:
    """Token ids [rows] int64: greedy where ``temperature`` is 0, else sampled from softmax(logits/T)."""
    rows, vocab = logits.shape
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    out = torch.empty(rows, dtype=torch.int64, device=logits.device)
    _gumbel_argmax_kernel[(rows,)](logits, temperature.to(torch.float32), out, seed, vocab, logits.stride(0),
                                   BLOCK=2048, num_warps=8)
    return out


class TritonSampler(ReferenceSampler):
    """Fused Gumbel-max sampling where the batch allows it; the reference pipeline elsewhere."""

    name: ClassVar[str] = "triton"

    def __init__(self) -> None:
        self._step = 0

    def __call__(
        self, logits: torch.Tensor, metadata: SamplingMetadata, generator: torch.Generator | None
    ) -> torch.Tensor:
        simple = (
            metadata.top_k is None and metadata.top_p is None and metadata.min_p is None and not metadata.generators
        )
        if not simple or metadata.all_greedy:
            return super().__call__(logits, metadata, generator)
        self._step += 1
        base = generator.initial_seed() if generator is not None else 0
        seed = (base * 1_000_003 + self._step) % (2**31 - 1)
        return gumbel_argmax(apply_logits_processors(logits, metadata), metadata.temperature, seed)
