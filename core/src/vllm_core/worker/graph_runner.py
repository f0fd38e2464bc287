"""The ``GraphRunner`` interface: replay captured device graphs for decode batches.

A platform that can capture graphs (CUDA, HIP) returns one from ``Platform.make_graph_runner``;
the model runner asks it first and runs eagerly when it declines (prefills, batches larger than
the largest captured size, ``enforce_eager``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from vllm_core.worker.input_batch import ModelInputs


class GraphRunner(ABC):
    """Captures the model's forward for fixed decode batch sizes and replays it."""

    @abstractmethod
    def capture(self) -> None:
        """Capture every batch-size bucket (largest first, one memory pool)."""

    @abstractmethod
    def try_run(self, inputs: ModelInputs) -> torch.Tensor | None:
        """Hidden states [num_tokens, hidden] by graph replay, or None when this batch is not
        a capturable decode batch."""

    @property
    @abstractmethod
    def captured_sizes(self) -> list[int]:
        """Batch sizes with a captured graph."""
