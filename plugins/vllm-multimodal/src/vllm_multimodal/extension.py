"""The ``multimodal`` runner extension: vision encoder, encoder cache, embeddings, M-RoPE.

Before each forward pass (``prepare_step``) it finds the scheduled token ranges that fall in an
image's placeholder range (a prefill chunk may hold part of one: chunked prefill), runs the
vision encoder for the images not in the encoder cache (one batch), and hands the model the
step's embeddings with those rows replaced (``ModelInputs.inputs_embeds``). Steps without image
tokens are left alone (decodes replay captured graphs as usual). For M-RoPE models it replaces
the step's positions with the (temporal, height, width) positions of each token.

It is created only for models that have an encoder (``embed_multimodal``): a text-only engine
gets no instance, and this module imports no image library.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from vllm_core.plugins.api import (
    EngineConfig,
    ModelInputs,
    MultiModalFeature,
    MultiModalInputs,
    RunnerContext,
    RunnerExtension,
    SchedulerOutput,
    StepConstraint,
)
from vllm_multimodal.budget import EncoderBudget
from vllm_multimodal.encoder_cache import EncoderCache

logger = logging.getLogger(__name__)

DEFAULT_ENCODER_BUDGET = 8192
"""Encoder tokens newly admitted requests may bring per step when ``max_num_batched_tokens`` is
unset; also the encoder cache's least size in rows (8192 rows of a 4096-wide model in bf16:
64 MiB), so chunks of a span cut by a small token budget still find their image cached."""


def encoder_budget(config: EngineConfig) -> int:
    return config.scheduler.max_num_batched_tokens or DEFAULT_ENCODER_BUDGET


def encoder_cache_rows(config: EngineConfig) -> int:
    return max(encoder_budget(config), DEFAULT_ENCODER_BUDGET)


class MultiModalRunner(RunnerExtension):
    name = "multimodal"

    def __init__(self, model: Any, device: torch.device, cache_tokens: int, platform: Any = None) -> None:
        self.model = model
        self.device = device
        self.platform = platform
        self.cache = EncoderCache(cache_tokens)
        self.uses_mrope = bool(getattr(model, "uses_mrope", False))
        self.time_encoder = False
        """True: wait for each encoder batch and add its wall time to ``cache.encoder_seconds``
        (a device sync per batch: off by default, benchmarks turn it on)."""

    @classmethod
    def create(cls, context: RunnerContext) -> MultiModalRunner | None:
        if not hasattr(context.model, "embed_multimodal"):
            return None
        return cls(context.model, context.device, encoder_cache_rows(context.config), context.platform)

    @classmethod
    def step_constraint(cls, config: EngineConfig) -> StepConstraint | None:
        return EncoderBudget(encoder_budget(config))

    def prepare_step(self, output: SchedulerOutput, inputs: ModelInputs) -> None:
        qsl = inputs.metadata.query_start_loc_cpu
        spans: list[tuple[int, MultiModalFeature, int, int]] = []  # (step row, feature, lo, hi)
        needed: dict[str, MultiModalFeature] = {}
        for i, sr in enumerate(output.scheduled):
            mm = sr.extensions.get(MultiModalInputs)
            if mm is None:
                continue
            start, end = sr.start_pos, sr.start_pos + sr.num_tokens
            for f in mm.features:
                lo, hi = max(start, f.placeholder.offset), min(end, f.placeholder.end)
                if lo < hi:
                    spans.append((qsl[i] + lo - start, f, lo - f.placeholder.offset, hi - f.placeholder.offset))
                    needed[f.identifier] = f
        if self.uses_mrope:
            inputs.positions = self._mrope_positions(output, inputs)
        if not spans:
            return
        encoded = self._encode(needed)
        embeds = self.model.embed_input_ids(inputs.input_ids)
        for row, f, lo, hi in spans:
            embeds[row : row + hi - lo] = encoded[f.identifier][lo:hi].to(embeds.dtype)
        inputs.inputs_embeds = embeds

    def _encode(self, needed: dict[str, MultiModalFeature]) -> dict[str, torch.Tensor]:
        """Every needed item's embeddings: from the cache, the rest from one encoder batch."""
        out: dict[str, torch.Tensor] = {}
        missing: list[MultiModalFeature] = []
        for ident, f in needed.items():
            cached = self.cache.get(ident)
            if cached is None:
                missing.append(f)
            else:
                out[ident] = cached
        if missing:
            t0 = time.perf_counter()
            results = self.model.embed_multimodal(missing)
            if self.time_encoder:
                if self.platform is not None:
                    self.platform.synchronize()
                self.cache.encoder_seconds += time.perf_counter() - t0
            self.cache.encoder_runs += len(missing)
            for f, emb in zip(missing, results):
                if emb.shape[0] != f.num_tokens:
                    raise ValueError(
                        f"the encoder gave {emb.shape[0]} embeddings for a {f.modality} with {f.num_tokens} "
                        "placeholder tokens; the processor and the model disagree on the token count"
                    )
                out[f.identifier] = emb
                self.cache.put(f.identifier, emb, keep=set(needed))
        return out

    def _mrope_positions(self, output: SchedulerOutput, inputs: ModelInputs) -> torch.Tensor:
        """[3, T] positions (1-D [T] when every token's three positions agree: text tokens)."""
        qsl = inputs.metadata.query_start_loc_cpu
        total = int(inputs.input_ids.shape[0])
        pos = np.zeros((3, total), dtype=np.int64)
        multi_axis = False
        for i, sr in enumerate(output.scheduled):
            p = np.arange(sr.start_pos, sr.start_pos + sr.num_tokens, dtype=np.int64)
            rows = slice(qsl[i], qsl[i] + sr.num_tokens)
            mm = sr.extensions.get(MultiModalInputs)
            if mm is None or mm.mrope_positions is None:
                pos[:, rows] = p
                continue
            table = np.asarray(mm.mrope_positions)
            prompt_len = table.shape[1]
            inside = p < prompt_len
            block = np.where(inside, 0, p + mm.mrope_position_delta)[None, :].repeat(3, 0)
            if inside.any():
                block[:, inside] = table[:, p[inside]]
                multi_axis = True
            pos[:, rows] = block
        if not multi_axis:
            return torch.from_numpy(pos[0].copy()).to(self.device)
        return torch.from_numpy(pos).to(self.device)
