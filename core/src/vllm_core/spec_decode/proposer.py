"""The ``Proposer`` interface: draft tokens for the next step of some requests."""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import torch

from vllm_core.config import SpeculativeConfig
from vllm_core.extensions.runner import RunnerContext, StepHiddenStates

if TYPE_CHECKING:
    from vllm_core.core.sched_output import ScheduledRequest, SchedulerOutput
    from vllm_core.worker.input_batch import ModelInputs


class Proposer(ABC):
    """Registered through ``register_proposers`` by ``method`` (``speculative_config["method"]``).

    Implement ``propose`` (token histories in, drafts out: the simplest proposers) or
    ``propose_step`` (the step's rows, with their block ids and positions: proposers that run
    a model and keep a KV cache of their own). Drafts only decide how fast a request goes: the
    target model verifies every one, so a bad draft never changes the output.
    """

    method: ClassVar[str]

    def __init__(self, config: SpeculativeConfig, context: RunnerContext) -> None:
        self.config = config
        self.context = context

    @classmethod
    def num_lookahead_slots(cls, config: SpeculativeConfig) -> int:
        """KV slots past its scheduled tokens that each request must hold for this proposer
        (one that writes its own KV for drafted positions after the step: ``k``)."""
        return 0

    def propose(self, histories: Sequence[Sequence[int]], max_drafts: Sequence[int]) -> list[list[int]]:
        """For each request's token history (prompt + output so far), at most ``max_drafts[i]``
        draft tokens to follow it (an empty list: no guess)."""
        raise NotImplementedError(f"{type(self).__name__} implements neither propose nor propose_step")

    def propose_step(
        self, rows: Sequence[ScheduledRequest], new_tokens: Sequence[Sequence[int]], max_drafts: Sequence[int]
    ) -> list[list[int]]:
        """Drafts for rows of the step that just ran: ``new_tokens[i]`` are the tokens row ``i``
        got this step (not yet in its ``output_token_ids``); at most ``max_drafts[i]`` each (0:
        none). The default builds each history and calls ``propose``."""
        histories = [[*r.prompt_token_ids, *r.output_token_ids, *toks] for r, toks in zip(rows, new_tokens)]
        return self.propose(histories, max_drafts)

    def draft_probs(self, req_id: str, draft_token_ids: Sequence[int]) -> torch.Tensor | None:
        """The distributions the request's drafts (as fed this step: possibly fewer than
        proposed) were sampled from, [len(draft_token_ids), vocab] float32; None for
        deterministic drafts (verified as one-hot)."""
        return None

    def hidden_states_wanted(self) -> tuple[int, ...] | None:
        """None (the default): the proposer reads no hidden states of the target. A tuple: it
        gets every step's (``accept_hidden_states``): the output and the input of these layers."""
        return None

    def accept_hidden_states(self, output: SchedulerOutput, inputs: ModelInputs, hidden: StepHiddenStates) -> None:
        """After every target forward: the hidden states of all the step's tokens."""

    def finish_requests(self, req_ids: set[str]) -> None:
        """Requests finished or aborted: drop their state."""

    def kv_bytes_per_block(self, block_size: int) -> int:
        """Bytes of the proposer's own KV per block of the model's cache (0: it keeps none)."""
        return 0

    def kv_cache_initialized(self, num_blocks: int, block_size: int) -> None:
        """The model's KV cache was allocated (a proposer with its own cache allocates it now,
        on the same block ids)."""
