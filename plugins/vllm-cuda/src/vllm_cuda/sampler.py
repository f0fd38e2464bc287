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

from vllm_core.plugins.api import ReferenceSampler, SamplingMetadata, apply_logits_processors, uses_logits_processors
from vllm_cuda.launch import LaunchConfigs
from vllm_cuda.launch_nvidia import DEFAULT_LAUNCH_CONFIGS, nvidia_launch_configs


@triton.jit(do_not_specialize=["seed"])  # a new seed every step: no recompiles
def _gumbel_argmax_partial_kernel(
    logits_ptr, temp_ptr, part_val_ptr, part_idx_ptr, seed, vocab, stride_row, num_chunks,
    CHUNK: tl.constexpr, BLOCK: tl.constexpr,
):
    """One (row, vocabulary chunk): the best Gumbel score of the chunk and its lowest index."""
    row = tl.program_id(0)
    chunk = tl.program_id(1)
    temp = tl.load(temp_ptr + row)
    greedy = temp <= 0.0
    inv_t = tl.where(greedy, 1.0, 1.0 / tl.where(greedy, 1.0, temp))
    best_val = tl.full([BLOCK], float("-inf"), tl.float32)
    best_idx = tl.zeros([BLOCK], tl.int32)
    for start in range(chunk * CHUNK, chunk * CHUNK + CHUNK, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < vocab
        x = tl.load(logits_ptr + row.to(tl.int64) * stride_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
        # The noise of (row, col) does not depend on how the vocabulary is cut into chunks.
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
    tl.store(part_val_ptr + row * num_chunks + chunk, top)
    tl.store(part_idx_ptr + row * num_chunks + chunk, idx)


@triton.jit
def _gumbel_argmax_reduce_kernel(part_val_ptr, part_idx_ptr, out_ptr, vocab, num_chunks, BLOCK_C: tl.constexpr):
    """One row: the best of its chunks (the lowest index among ties: chunks are in vocabulary order)."""
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK_C)
    mask = offs < num_chunks
    vals = tl.load(part_val_ptr + row * num_chunks + offs, mask=mask, other=float("-inf"))
    idxs = tl.load(part_idx_ptr + row * num_chunks + offs, mask=mask, other=vocab)
    top = tl.max(vals, axis=0)
    idx = tl.min(tl.where(vals == top, idxs, vocab), axis=0)
    tl.store(out_ptr + row, idx.to(tl.int64))


def gumbel_argmax(
    logits: torch.Tensor, temperature: torch.Tensor, seed: int, configs: LaunchConfigs = DEFAULT_LAUNCH_CONFIGS
) -> torch.Tensor:
    """Token ids [rows] int64: greedy where ``temperature`` is 0, else sampled from softmax(logits/T).

    ``logits`` may be 16-bit: they are read once and widened to float32 in the kernel. The grid
    is rows x vocabulary chunks of ``configs.sampler.chunk`` entries, which fills the GPU even at
    batch 1 (one program per row left a 152k vocabulary to 32 programs at batch 32: 120 us a step)."""
    rows, vocab = logits.shape
    if logits.stride(-1) != 1:
        logits = logits.contiguous()
    tuning = configs.sampler
    num_chunks = triton.cdiv(vocab, tuning.chunk)
    part_val = torch.empty(rows, num_chunks, dtype=torch.float32, device=logits.device)
    part_idx = torch.empty(rows, num_chunks, dtype=torch.int32, device=logits.device)
    out = torch.empty(rows, dtype=torch.int64, device=logits.device)
    if rows == 0:
        return out
    _gumbel_argmax_partial_kernel[(rows, num_chunks)](
        logits, temperature.to(torch.float32), part_val, part_idx, seed, vocab, logits.stride(0), num_chunks,
        CHUNK=tuning.chunk, BLOCK=tuning.block, **tuning.partial.options,
    )
    _gumbel_argmax_reduce_kernel[(rows,)](
        part_val, part_idx, out, vocab, num_chunks, BLOCK_C=triton.next_power_of_2(num_chunks),
        **tuning.reduce.options,
    )
    return out


class TritonSampler(ReferenceSampler):
    """Fused Gumbel-max sampling where the batch allows it; the reference pipeline elsewhere."""

    name: ClassVar[str] = "triton"

    def __init__(self, configs: LaunchConfigs | None = None) -> None:
        self._step = 0
        self.configs = configs if configs is not None else self.default_configs()
        """Launch configs of the sampler's kernels (the device's table entry unless given)."""

    @classmethod
    def default_configs(cls) -> LaunchConfigs:
        """The NVIDIA table entry of the current device (the generic one without a CUDA device).
        A platform on other hardware registers a subclass that overrides this."""
        if torch.version.cuda is not None and torch.cuda.is_available():
            return nvidia_launch_configs(torch.cuda.get_device_capability())
        return DEFAULT_LAUNCH_CONFIGS

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
        if uses_logits_processors(metadata):
            logits = apply_logits_processors(logits, metadata)
        # else the kernel reads the model's (16-bit) logits as they are: no float32 copy
        return gumbel_argmax(logits, metadata.temperature, seed, self.configs)
