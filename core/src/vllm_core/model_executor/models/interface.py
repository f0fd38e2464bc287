"""What a model class receives and must provide."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from vllm_core.attention.backend import AttentionBackend
from vllm_core.attention.metadata import AttentionMetadata
from vllm_core.distributed.parallel_state import SINGLE, ParallelContext
from vllm_core.platforms.ops import Ops


@dataclass(frozen=True)
class ModelContext:
    """Everything a model needs from the platform, passed to its constructor."""

    ops: Ops
    attention_backend: type[AttentionBackend]
    max_positions: int
    """Largest position the rotary table must cover."""
    parallel: ParallelContext = field(default=SINGLE)
    """This rank's tensor / pipeline groups (a world of one by default): a model builds its
    shard of the layers (``model_executor.layers.parallel``) and its pipeline stage."""


class CausalLM(Protocol):
    """The contract of a registered model class: ``cls(hf_config, ctx)``."""

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, metadata: AttentionMetadata
    ) -> torch.Tensor | None:
        """input_ids, positions: [T] -> hidden states [T, hidden]; None on a pipeline stage
        other than the last (it sent its output to the next stage)."""
        ...

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, hidden] -> logits [N, vocab]."""
        ...

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        """Copy Hugging Face-named tensors into the parameters; returns the names loaded."""
        ...

    def attention_layers(self) -> list[Any]:
        """The ``Attention`` modules in layer order (the runner binds their KV caches)."""
        ...
