"""Start-up precompilation: one dummy step of every reachable step shape.

A step shape is a (token bucket, request bucket) pair at the fixed block-table width. Each is
compiled twice over: the sampling step (model, logits, sampler) and, for the smallest request
bucket, the step that samples nothing (one prompt chunk that does not reach its end, the only
way a step samples no row). Shapes no schedule can produce (more requests than tokens, or
requests longer than ``max_model_len``) are skipped. The dummy steps write garbage into KV
blocks that no request owns yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from tqdm import tqdm

from vllm_core.plugins.api import SamplingParams, ScheduledRequest, SchedulerOutput, StepShapes

logger = logging.getLogger(__name__)

_GREEDY = SamplingParams(temperature=0.0, max_tokens=1)


def _lens(num_tokens: int, num_reqs: int) -> list[int]:
    base, extra = divmod(num_tokens, num_reqs)
    return [base + (1 if i < extra else 0) for i in range(num_reqs)]


def dummy_steps(shapes: StepShapes, max_model_len: int, block_size: int, num_blocks: int) -> Iterator[SchedulerOutput]:
    """One ``SchedulerOutput`` per reachable shape (see the module docstring)."""
    next_block = 0

    def step(lens: list[int], sample: bool) -> SchedulerOutput:
        nonlocal next_block
        rows = []
        for i, n in enumerate(lens):
            blocks = [(next_block + b) % num_blocks for b in range(-(-n // block_size))]
            next_block = (next_block + len(blocks)) % num_blocks
            rows.append(ScheduledRequest(f"warmup-{i}", [0] * n, 0, blocks, _GREEDY, sample, 0, None))
        return SchedulerOutput(rows, sum(lens))

    t_prev = 0
    for t in shapes.token_buckets:
        r_prev = 0
        for r in shapes.request_buckets:
            n = min(r, t)
            if n > r_prev:
                lens = _lens(t, n)
                if max(lens) <= max_model_len:
                    yield step(lens, True)
            r_prev = r
        if t_prev < t <= max_model_len:
            yield step([t], False)
        t_prev = t


def count_steps(shapes: StepShapes, max_model_len: int) -> int:
    return sum(1 for _ in dummy_steps(shapes, max_model_len, 1, 1))


def precompile(
    execute: Callable[[SchedulerOutput], Any], shapes: StepShapes, max_model_len: int, block_size: int,
    num_blocks: int, compile_count: Callable[[], int],
) -> tuple[int, float]:
    """Run every dummy step; returns (graphs compiled, seconds)."""
    start, before = time.perf_counter(), compile_count()
    total = count_steps(shapes, max_model_len)
    logger.info("XLA: precompiling %d step shapes (%s)", total, shapes.describe())
    for out in tqdm(dummy_steps(shapes, max_model_len, block_size, num_blocks), total=total,
                    desc="XLA precompile", unit="shape"):
        execute(out)
    compiled, seconds = compile_count() - before, time.perf_counter() - start
    return compiled, seconds
