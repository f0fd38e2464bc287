"""The ``Proposer`` interface: draft tokens for the next step of some requests."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from vllm_core.config import SpeculativeConfig
from vllm_core.extensions.runner import RunnerContext


class Proposer(ABC):
    """Registered through ``register_proposers`` by ``method`` (``speculative_config["method"]``)."""

    method: ClassVar[str]

    def __init__(self, config: SpeculativeConfig, context: RunnerContext) -> None:
        self.config = config
        self.context = context

    @abstractmethod
    def propose(self, histories: Sequence[Sequence[int]], max_drafts: Sequence[int]) -> list[list[int]]:
        """For each request's token history (prompt + output so far), at most ``max_drafts[i]``
        draft tokens to follow it (an empty list: no guess)."""
