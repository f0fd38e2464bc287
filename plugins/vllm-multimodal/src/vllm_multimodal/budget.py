"""The encoder budget per step: how many image tokens newly admitted requests may bring.

Made by the ``multimodal`` runner extension as a ``StepConstraint`` in the engine core's
process. A waiting request with images is admitted while the step's admitted encoder tokens
stay within the budget (the first one always is, so an image larger than the budget still
runs); a refused request keeps its place and is asked again next step. Text-only requests are
never held back.
"""

from __future__ import annotations

from collections.abc import Sequence

from vllm_core.plugins.api import ExtensionState, MultiModalInputs, StepConstraint


class EncoderBudget(StepConstraint):
    def __init__(self, budget_tokens: int) -> None:
        self.budget = budget_tokens
        self.used = 0

    def begin_step(self, running: Sequence[ExtensionState]) -> None:
        self.used = 0

    def admit(self, extensions: ExtensionState) -> bool:
        mm = extensions.get(MultiModalInputs)
        if mm is None:
            return True
        need = mm.num_encoder_tokens
        if self.used and self.used + need > self.budget:
            return False
        self.used += need
        return True
