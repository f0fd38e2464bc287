"""``StepConstraint``: a feature's rule on which waiting requests may join a step.

The scheduler knows no feature by name. A feature that limits what one step may hold (LoRA:
at most ``max_loras`` distinct adapters, as many as the device has slots) gives the scheduler
a constraint; each step the scheduler tells it what is already running, then asks it about
each waiting request in queue order. A refused request keeps its place in the queue and is
asked again next step: it waits, it is never failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vllm_core.extensions.state import ExtensionState


@dataclass(frozen=True)
class InfoGauge:
    """One sample a feature reports about the scheduler's queues, served on ``/metrics`` as a
    gauge with exactly these labels (LoRA: ``vllm:lora_requests_info``)."""

    name: str
    documentation: str
    labels: tuple[tuple[str, str], ...]
    value: float


class StepConstraint:
    """Base class: admits everything, reports nothing."""

    def begin_step(self, running: Sequence[ExtensionState]) -> None:
        """A step starts; ``running`` is the extension state of every running request."""

    def admit(self, extensions: ExtensionState) -> bool:
        """May this waiting request start in this step? Answering True counts it as running
        for the rest of the step."""
        return True

    def info_gauges(self, running: Sequence[ExtensionState], waiting: Sequence[ExtensionState]) -> Sequence[InfoGauge]:
        """Samples for ``/metrics`` from the running and waiting requests' extension state
        (asked when the server is scraped, in the engine core's process)."""
        return ()
