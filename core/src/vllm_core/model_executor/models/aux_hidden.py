"""``AuxHiddenStates``: the residual stream entering chosen decoder layers, kept after a forward.

A reader that needs more than the model's output (EAGLE-3's draft head reads three of the
target's layers: low, middle, high) asks the model to keep them
(``set_aux_hidden_state_layers``). The decoder then writes, before each chosen layer, the sum
``hidden + residual`` (the stream as it enters the layer, which the layer's fused add-norm would
otherwise compute in place) into one persistent buffer ``[capacity, len(layers) * hidden]``.
A persistent buffer keeps the rows where a captured graph (CUDA graph) wrote them at replay, so
graph steps and eager steps are read the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vllm_core.errors import ConfigError, EngineError


class AuxHiddenStates:
    """The kept layers' inputs of the last forward: ``read(T)`` -> [T, len(layers) * hidden]."""

    def __init__(
        self, layers: Sequence[int], num_layers: int, hidden_size: int, capacity: int, dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        bad = [i for i in layers if not 0 <= i < num_layers]
        if bad or not layers:
            raise ConfigError(
                f"auxiliary hidden-state layers {list(layers)} are not all in 0..{num_layers - 1} (the model has "
                f"{num_layers} decoder layers); choose layer indices inside that range"
            )
        self.layers = tuple(layers)
        self.column = {layer: j * hidden_size for j, layer in enumerate(self.layers)}
        self.hidden_size = hidden_size
        self.buffer = torch.zeros(capacity, len(self.layers) * hidden_size, dtype=dtype, device=device)
        """[capacity, len(layers) * hidden]: row t holds token t's inputs of the kept layers."""

    @property
    def capacity(self) -> int:
        return int(self.buffer.shape[0])

    def reserve(self, num_tokens: int) -> None:
        """Room for steps of ``num_tokens`` rows (before any graph is captured: graphs keep the
        buffer they were captured with)."""
        if num_tokens > self.capacity:
            self.buffer = torch.zeros(
                num_tokens, self.buffer.shape[1], dtype=self.buffer.dtype, device=self.buffer.device
            )

    def record(self, layer: int, hidden: torch.Tensor, residual: torch.Tensor | None) -> None:
        """Inside the forward, before ``layer``: keep ``hidden + residual`` (``hidden`` alone
        before the first layer)."""
        n = hidden.shape[0]
        if n > self.capacity:
            raise EngineError(
                f"a step of {n} tokens exceeds the {self.capacity} rows reserved for auxiliary hidden states; "
                "reserve() must be called with the largest step before it runs"
            )
        col = self.column[layer]
        out = self.buffer[:n, col : col + self.hidden_size]
        if residual is None:
            out.copy_(hidden)
        else:
            torch.add(hidden, residual, out=out)

    def read(self, num_tokens: int) -> torch.Tensor:
        """[num_tokens, len(layers) * hidden]: the last forward's rows."""
        return self.buffer[:num_tokens]
