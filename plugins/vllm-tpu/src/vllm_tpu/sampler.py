"""The sampler on the XLA device: one graph per request bucket, whatever the rows ask for.

The core's reference sampler picks its pipeline by the batch (``all_greedy``, ``top_k`` None
when no row uses it), which on XLA would compile a graph per combination. This one always runs
the same pipeline over the request bucket's rows (``pads_rows``; padded rows are greedy):
temperature, top-k (0 = off), top-p (1 = off), ``argmax(probs / noise)`` and ``where(greedy)``.
The exponential noise is drawn on the host (seeded rows from their own generators, as the
reference sampler does) and moved once; all-greedy steps reuse a device tensor of ones.
Penalties, logit bias, allowed tokens, bad words and min-p are applied when a row asks for
them; they change the graph, which the recompilation guard reports (see the README).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from vllm_core.plugins.api import (
    Sampler,
    SamplingMetadata,
    apply_logits_processors,
    apply_warpers,
    uses_logits_processors,
)


class XLASampler(Sampler):
    """Greedy, temperature, top-k, top-p and seeds in one static-shape graph."""

    name: ClassVar[str] = "xla"
    pads_rows: ClassVar[bool] = True

    def __init__(self) -> None:
        self._ones: dict[tuple[int, int, str], torch.Tensor] = {}
        self._filled: dict[tuple[int, str, torch.dtype, float], torch.Tensor] = {}

    def _constant(self, rows: int, device: torch.device, dtype: torch.dtype, value: float) -> torch.Tensor:
        """[rows] of ``value`` as device data (not a constant in the graph: same graph as when
        the rows carry their own values)."""
        key = (rows, str(device), dtype, value)
        if key not in self._filled:
            self._filled[key] = torch.full((rows,), value, dtype=dtype).to(device)
        return self._filled[key]

    def _noise(self, logits: torch.Tensor, metadata: SamplingMetadata, generator: torch.Generator | None) -> torch.Tensor:
        rows, vocab = logits.shape
        if metadata.all_greedy:
            key = (rows, vocab, str(logits.device))
            if key not in self._ones:
                self._ones[key] = torch.ones(rows, vocab).to(logits.device)
            return self._ones[key]
        q = torch.empty(rows, vocab)
        q.exponential_(generator=generator)
        for row, gen in metadata.generators.items():
            q[row].exponential_(generator=gen)
        return q.to(logits.device)

    def __call__(
        self, logits: torch.Tensor, metadata: SamplingMetadata, generator: torch.Generator | None
    ) -> torch.Tensor:
        rows = logits.shape[0]
        processed = apply_logits_processors(logits, metadata) if uses_logits_processors(metadata) else logits.float()
        greedy = processed.argmax(dim=-1)
        full = SamplingMetadata(
            temperature=metadata.temperature,
            top_k=metadata.top_k if metadata.top_k is not None else self._constant(rows, logits.device, torch.int64, 0),
            top_p=metadata.top_p if metadata.top_p is not None else self._constant(rows, logits.device, torch.float32, 1.0),
            min_p=metadata.min_p, all_greedy=False, all_random=False, generators={}, banned_tokens=[],
        )
        probs = apply_warpers(processed, full).softmax(dim=-1)
        sampled = (probs / self._noise(logits, metadata, generator)).argmax(dim=-1)
        return torch.where(metadata.temperature > 0, sampled, greedy)
