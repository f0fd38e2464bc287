"""``HiddenStatesTap``: hands each step's hidden states to the runner extensions that read them.

An extension asks with ``RunnerExtension.hidden_states_wanted`` (EAGLE's proposer: the model's
output; EAGLE-3's: also the input of three decoder layers). The tap asks the model to keep those
layers (``set_aux_hidden_state_layers``, a method of the model classes that support it) and, after
every forward, packs the output and the kept layers into one ``StepHiddenStates``. The runner
knows no reader by name; without readers there is no tap and the step does no extra work.
"""

from __future__ import annotations

from typing import Any

import torch

from vllm_core.errors import ConfigError
from vllm_core.extensions.runner import RunnerExtensions, StepHiddenStates


class HiddenStatesTap:
    """The model's hidden states for the extensions that asked for them."""

    def __init__(self, model: Any, layers: tuple[int, ...], max_tokens: int) -> None:
        self.model = model
        self.layers = layers
        if layers:
            setter = getattr(model, "set_aux_hidden_state_layers", None)
            if setter is None:
                raise ConfigError(
                    f"a runner extension reads the input of decoder layers {list(layers)} (EAGLE-3), but "
                    f"{type(model).__name__} cannot keep them (it has no set_aux_hidden_state_layers); use a "
                    "Llama-family target or a method that reads the output only (\"eagle\")"
                )
            self.taps = setter(layers, max_tokens)

    @classmethod
    def create(cls, model: Any, extensions: RunnerExtensions, max_tokens: int) -> HiddenStatesTap | None:
        """A tap when some extension reads hidden states, else None."""
        layers = extensions.hidden_states_wanted()
        return None if layers is None else cls(model, layers, max_tokens)

    def reserve(self, num_tokens: int) -> None:
        """Room for steps of ``num_tokens`` rows (static step shapes pad past the token budget)."""
        if self.layers:
            self.taps.reserve(num_tokens)

    def step(self, hidden: torch.Tensor) -> StepHiddenStates:
        """The step's states: ``hidden`` [T, H] is the forward's output."""
        if not self.layers:
            return StepHiddenStates(hidden)
        return StepHiddenStates(hidden, self.model.aux_hidden_states(hidden.shape[0]), self.layers)
