"""``LoRAExtension``: the runner side of LoRA, and the scheduler's ``max_loras`` constraint.

``create`` wraps the loaded model's projections (``layers.wrap_model``); ``add_request`` starts
loading the request's adapter into host memory on a loader thread (pinned while the request
lives; ``is_ready`` holds the request in the queue until it is there); ``prepare_step`` puts
the step's adapters in device slots (copying the new ones in place) and writes every token
row's slot into the persistent ``token_slots`` buffer that the wrapped projections read, with
the ops' per-step tables (``LoRABatch.load_step``). The scheduler's ``MaxAdaptersConstraint``
also reports vLLM's ``vllm:lora_requests_info`` for ``/metrics``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import torch

from vllm_core.plugins.api import (
    ConfigError,
    EngineConfig,
    ExtensionState,
    ModelInputs,
    RunnerContext,
    RunnerExtension,
    SamplingParams,
    SchedulerOutput,
    StepConstraint,
)
from vllm_lora.adapter import EMBEDDING, EMBEDDING_LAYER, LM_HEAD, LM_HEAD_LAYER
from vllm_lora.admission import MaxAdaptersConstraint
from vllm_lora.config import LoRAConfig
from vllm_lora.layers import LoRABatch, LoRAEmbedding, LoRAHead, LoRAModule, padded_rank, target_of, wrap_model
from vllm_lora.manager import DeviceSlots, HostAdapters
from vllm_lora.ops import PlatformLoRAOps, select_lora_ops
from vllm_lora.request import AdapterRef

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _host(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` as the source of a copy to ``device`` that does not make the host wait for the step
    in flight (pinned memory on accelerators; CUDA synchronises copies from pageable memory)."""
    if device.type == "cpu":
        return t
    # a fresh block of PyTorch's pinned-host cache, not t.pin_memory(): that first asks the driver
    # whether t is pinned already (a pointer-attribute query, ~40 us a call seen on an H100 host)
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    return host.copy_(t)


class LoRAExtension(RunnerExtension):
    name: ClassVar[str] = "lora"

    @classmethod
    def create(cls, context: RunnerContext) -> LoRAExtension | None:
        cfg = context.config.plugin_config(LoRAConfig)
        if cfg is None or not cfg.enable_lora:
            return None
        if context.model is None:
            raise ConfigError("enable_lora=True needs a runner that holds the model")
        return cls(cfg, context)

    @classmethod
    def step_constraint(cls, config: EngineConfig) -> StepConstraint | None:
        cfg = config.plugin_config(LoRAConfig)
        if cfg is None or not cfg.enable_lora:
            return None
        return MaxAdaptersConstraint(cfg.max_loras, cfg.max_lora_wait_steps)

    def __init__(self, cfg: LoRAConfig, context: RunnerContext) -> None:
        self.cfg = cfg
        model = context.model
        weight = next(p for p in model.parameters())
        dtype = weight.dtype if cfg.lora_dtype == "auto" else _DTYPES[cfg.lora_dtype]
        device = weight.device
        sched = context.config.scheduler
        num_rows = max(sched.max_num_batched_tokens or 8192, sched.max_num_seqs)
        self.ops = select_lora_ops(context.platform)
        self.batch = LoRABatch(
            self.ops,
            torch.full((num_rows,), -1, dtype=torch.int64, device=device),
            torch.zeros(cfg.max_loras, dtype=torch.float32, device=device),
            dtype,
        )
        # CUDA graphs record any op. The cpu platform's plans hold only its own kernels: the LoRA op
        # where the platform has a kernel for it (``Ops.add_lora``), never the embedding's delta.
        plans = device.type == "cpu"
        self.batch.capture_lora = not plans or (isinstance(self.ops, PlatformLoRAOps) and self.ops.kernel)
        self.batch.capture_embedding = not plans
        self.always_active = plans and self.batch.capture_lora
        """The cpu platform records a batch size's plan at its first decode step, whatever that
        step's rows: every forward runs the LoRA op (which skips base rows at no cost), so each
        recording holds it."""
        self.batch.active = self.batch.capture_lora
        self.batch.refresh()
        self.modules: dict[tuple[int, str], LoRAModule] = wrap_model(
            model, self.batch, cfg.max_loras, padded_rank(cfg.max_lora_rank), dtype
        )
        head = self.modules.get((LM_HEAD_LAYER, LM_HEAD))
        self.head = head if isinstance(head, LoRAHead) else None
        self.device = device
        self.host = HostAdapters(cfg.cpu_capacity, prepare=lambda t: _host(t, device))
        self.slots = DeviceSlots(cfg.max_loras)
        self._first_step = True
        self.request_adapter: dict[str, str | None] = {}
        """req_id -> adapter digest of live requests (None: the base model)"""
        logger.info("LoRA: %d slots of rank %d, %d host adapters, %s ops", cfg.max_loras,
                    padded_rank(cfg.max_lora_rank), cfg.cpu_capacity, self.ops.name)

    # ---------------------------------------------------------------------- requests
    def add_request(self, req_id: str, params: SamplingParams, extensions: ExtensionState) -> None:
        ref = extensions.get(AdapterRef)
        if ref is not None:
            self.host.acquire(ref.spec)
        self.request_adapter[req_id] = None if ref is None else ref.digest

    def is_ready(self, req_id: str) -> bool:
        digest = self.request_adapter.get(req_id)
        return digest is None or self.host.ready(digest)

    def finish_requests(self, req_ids: set[str]) -> None:
        for rid in req_ids:
            digest = self.request_adapter.pop(rid, None)
            if digest is not None:
                self.host.release(digest)

    # -------------------------------------------------------------------------- steps
    def prepare_step(self, output: SchedulerOutput, inputs: ModelInputs) -> None:
        known = self.request_adapter
        scheduled = output.scheduled
        digests = [known[sr.req_id] if sr.req_id in known else self._digest_of(sr.req_id, sr.extensions)
                   for sr in scheduled]
        slot_of, to_load = self.slots.assign(d for d in digests if d is not None)
        for slot, digest in to_load:
            self._load_slot(slot, digest)
        slot_or_base: dict[str | None, int] = {None: -1}
        slot_or_base.update(slot_of)
        per_req = np.array([slot_or_base[d] for d in digests], dtype=np.int64)
        # each request's token rows, from the step's query start offsets (in scheduled order)
        starts: np.ndarray = np.asarray(inputs.metadata.query_start_loc_cpu[: len(scheduled) + 1], dtype=np.int64)
        counts = starts[1:] - starts[:-1]
        rows = np.full(inputs.input_ids.shape[0], -1, dtype=np.int64)
        rows[: int(counts.sum())] = np.repeat(per_req, counts)
        self.batch.load_step(rows, lambda t: _host(t, self.device))
        # the first step (the profiling run, on accelerators) runs the op, so its memory is counted
        self.batch.active = bool(slot_of) or self._first_step or self.always_active
        self.batch.has_rows = bool(slot_of)
        self._first_step = False

    def prepare_logits(self, token_rows: torch.Tensor) -> None:
        """The token rows of the next ``compute_logits`` call (LoRA on ``lm_head``)."""
        if self.head is not None:
            self.head.token_rows = token_rows

    def allows_graph(self) -> bool:
        # graphs recorded without the LoRA op (or the embedding's) serve only steps without adapter rows
        if not self.batch.has_rows:
            return True
        embedding = self.modules.get((EMBEDDING_LAYER, EMBEDDING))
        uncaptured_embedding = (not self.batch.capture_embedding and isinstance(embedding, LoRAEmbedding)
                                and bool(embedding.loaded))
        return self.batch.capture_lora and not uncaptured_embedding

    def _digest_of(self, req_id: str, extensions: ExtensionState) -> str | None:
        """A request this extension was not told about (should not happen): known from now on."""
        self.add_request(req_id, SamplingParams(), extensions)
        return self.request_adapter[req_id]

    def _load_slot(self, slot: int, digest: str) -> None:
        spec, weights = self.host.get(digest)
        for module in self.modules.values():
            module.clear_slot(slot)
        for (layer, peft_module), (a, b) in weights.items():
            key, slice_index = target_of(layer, peft_module)
            target = self.modules.get(key)
            if target is None:  # another pipeline stage holds it (the adapter was checked against the model)
                continue
            target.set_slot(slot, slice_index, a, b)  # pinned when loaded (HostAdapters)
        self.batch.scaling[slot] = spec.scaling
        logger.debug("LoRA adapter %s in device slot %d", spec.path, slot)

    def describe(self) -> dict[str, Any]:
        """Host and device state (tests, logs)."""
        return {"host": self.host.digests, "slots": list(self.slots.slots)}
