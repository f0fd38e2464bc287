"""``CPUGraphRunner``: decode steps replayed from recorded kernel plans (``vllm_cpu.plan``).

The CPU's counterpart of CUDA graphs. For each batch-size bucket up to
``VLLM_CPU_GRAPH_MAX_BATCH`` (default ``DEFAULT_MAX_BATCH``), the model's forward over the
persistent decode inputs (``DecodeBuffers``) is recorded once; a pure-decode step of
``n <= bucket`` rows copies its inputs into the buffers and replays the bucket's plan in one C
call. The Python between kernel calls (~2.5 ms of a 13 ms SmolLM2 token on 2 cores) is paid once
per bucket, when it is recorded. Larger batches spend a smaller share on it and run eagerly, as
do prefills and mixed steps.

Only the largest bucket is recorded at start-up; every other one is recorded by its first step,
which runs eagerly under the recorder and so computes that step's output (a recording costs an
eager step plus ~5 %). A start-up that recorded all twelve buckets of SmolLM2 spent ~0.6 s on
them (most of which no short run ever uses) instead of ~0.1 s.

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
        """Every bucket that replays a plan: recorded already or at its first step (none when
        the largest one's capture was refused)."""
        return list(self.buffers.sizes) if self.plans else []

    @property
    def recorded_sizes(self) -> list[int]:
        """The buckets recorded so far."""
        return sorted(self.plans)

    def _step(self, bs: int) -> functools.partial[torch.Tensor]:
        buf = self.buffers
        return functools.partial(self.model, buf.input_ids[:bs], buf.positions[:bs], buf.metadata(bs))

    @torch.inference_mode()
    def capture(self) -> None:
        """Record the largest bucket (the others' buffers are views of its); the others are
        recorded by their first step (``try_run``)."""
        top, start = self.buffers.sizes[-1], time.perf_counter()
        self._step(top)()  # packs the weights and grows scratch buffers outside the recording
        try:
            plan = self.plans[top] = record(self.ops, self._step(top))
        except NotCapturable as exc:
            logger.warning("decode steps run eagerly (no recorded plans): %s", exc)
            self.plans.clear()
            return
        held = sum(plan.storages().values())
        logger.info(
            "recorded the decode plan for %d rows in %.2f s (%d kernel calls a step, %.1f MiB held); "
            "batch sizes %s are recorded at their first step",
            top, time.perf_counter() - start, plan.num_calls, held / 2**20, self.buffers.sizes[:-1],
        )

    @torch.inference_mode()
    def _record(self, bs: int) -> Plan | None:
        """Record bucket ``bs`` by running its step on the loaded buffers (None, and no plans
        from now on, when the recording is refused: the caller runs the step eagerly)."""
        start = time.perf_counter()
        try:
            plan = self.plans[bs] = record(self.ops, self._step(bs), self.plans[self.buffers.sizes[-1]].allocated)
        except NotCapturable as exc:
            logger.warning("decode steps run eagerly (recording %d rows refused): %s", bs, exc)
            self.plans.clear()
            return None
        logger.debug("recorded the decode plan for %d rows at its first step in %.1f ms", bs,
                     1e3 * (time.perf_counter() - start))
        return plan

    def try_run(self, inputs: ModelInputs) -> torch.Tensor | None:
        if not self.plans:
            return None
        bs = self.buffers.load(inputs)
        if bs is None:
            return None
        plan = self.plans.get(bs)
        if plan is None:
            plan = self._record(bs)  # the recording computes this step
            if plan is None:
                return None
            out = plan.output
        else:
            out = plan.run()
        return out[: inputs.num_actual_tokens]  # one row per token (verification rows too)
