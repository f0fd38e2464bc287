"""``CPUGraphRunner``: decode steps replayed from recorded kernel plans (``vllm_cpu.plan``).

The CPU's counterpart of CUDA graphs. For each batch-size bucket up to
``VLLM_CPU_GRAPH_MAX_BATCH`` (default ``DEFAULT_MAX_BATCH``), the model's forward over the
persistent decode inputs (``DecodeBuffers``) is recorded once at start-up; a pure-decode step of
``n <= bucket`` rows copies its inputs into the buffers and replays the bucket's plan in one C
call. The Python between kernel calls (~2.5 ms of a 13 ms SmolLM2 token on 2 cores) is paid once
per bucket at capture. Larger batches spend a smaller share on it and run eagerly, as do
prefills and mixed steps.

The plans keep the tensors their captures allocated (the layers' outputs: ~0.5 MB a row for
SmolLM2 in float32); smaller buckets are views of the largest one's, as plans never run at the
same time.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import torch
from torch import nn

from vllm_core.plugins.api import DecodeBuffers, GraphRunner, ModelInputs, batch_buckets
from vllm_cpu.plan import NotCapturable, Plan, record
from vllm_cpu.platform import int_from_env

logger = logging.getLogger(__name__)

ENV_MAX_BATCH = "VLLM_CPU_GRAPH_MAX_BATCH"
DEFAULT_MAX_BATCH = 64


def max_captured_batch() -> int:
    """``VLLM_CPU_GRAPH_MAX_BATCH`` (0 turns plans off), else ``DEFAULT_MAX_BATCH``."""
    value = int_from_env(ENV_MAX_BATCH, 0, "a batch size", lambda: "give a whole number >= 0 (0: no plans)")
    return DEFAULT_MAX_BATCH if value is None else value


def plan_sizes(max_num_seqs: int, max_batch: int) -> list[int]:
    """The batch sizes recorded: every size up to 8, then ``batch_buckets``'. A verification step
    of one request with ``k`` drafts is ``1 + k`` decode rows, and on a CPU a plan's cost grows
    with its rows (a GPU step at these sizes is bound by reading the weights, a CPU step is not):
    SmolLM2's 1 + 4-row verify step took 12.1 ms as the bucket of 8, 8.9 ms as a bucket of 5."""
    sizes = batch_buckets(max_num_seqs, max_batch)
    return sorted(set(sizes) | {s for s in range(1, 9) if s <= sizes[-1]})


class CPUGraphRunner(GraphRunner):
    def __init__(
        self, model: nn.Module, ops: Any, max_num_seqs: int, max_model_len: int, block_size: int, max_batch: int
    ) -> None:
        self.model = model
        self.ops = ops
        self.buffers = DecodeBuffers(plan_sizes(max_num_seqs, max_batch), max_model_len, block_size, torch.device("cpu"))
        self.plans: dict[int, Plan] = {}

    @property
    def captured_sizes(self) -> list[int]:
        return sorted(self.plans)

    @torch.inference_mode()
    def capture(self) -> None:
        buf, start = self.buffers, time.perf_counter()
        for bs in reversed(buf.sizes):
            step = functools.partial(self.model, buf.input_ids[:bs], buf.positions[:bs], buf.metadata(bs))
            largest = self.plans.get(buf.sizes[-1])
            if largest is None:
                step()  # packs the weights and grows scratch buffers outside the recording
            try:
                self.plans[bs] = record(self.ops, step, largest.allocated if largest is not None else None)
            except NotCapturable as exc:
                logger.warning("decode steps run eagerly (no recorded plans): %s", exc)
                self.plans.clear()
                return
        elapsed = time.perf_counter() - start
        held = sum({k: v for p in self.plans.values() for k, v in p.storages().items()}.values())
        logger.info(
            "recorded decode plans for batch sizes %s in %.2f s (%d kernel calls a step, %.1f MiB held)",
            self.captured_sizes, elapsed, self.plans[self.captured_sizes[0]].num_calls, held / 2**20,
        )

    def try_run(self, inputs: ModelInputs) -> torch.Tensor | None:
        if not self.plans:
            return None
        bs = self.buffers.load(inputs)
        if bs is None:
            return None
        return self.plans[bs].run()[: inputs.num_actual_tokens]  # one row per token (verification rows too)
