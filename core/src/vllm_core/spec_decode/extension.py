"""``SpeculativeDecoding``: the runner extension that drafts tokens with the configured proposer.

After every step it asks the proposer for drafts of each eligible row that sampled; the runner
returns them with the step's tokens and the scheduler feeds them next step. Rows are not
drafted for when verification could change what they would produce or report: structured
outputs (the grammar would have to accept each draft), logprobs (reported per sampled
position), seeded random sampling (its draws come from the request's own generator, which
verification does not use). The counters match vLLM's ``spec_decode`` metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from vllm_core.config import SpeculativeConfig
from vllm_core.extensions.runner import RunnerContext, RunnerExtension, SampledTokens
from vllm_core.sampling_params import SamplingParams
from vllm_core.spec_decode.proposer import Proposer

if TYPE_CHECKING:
    from vllm_core.core.sched_output import ScheduledRequest

logger = logging.getLogger(__name__)


def draftable(params: SamplingParams) -> bool:
    """Whether a request's tokens may be drafted and verified (see the module docstring)."""
    return (
        params.structured_outputs is None
        and params.logprobs is None
        and (params.seed is None or params.is_greedy)
    )


class SpeculativeDecoding(RunnerExtension):
    """Drafts with ``speculative_config``'s proposer; off when the engine has none."""

    name: ClassVar[str] = "speculative_decoding"
    supports_async_scheduling: ClassVar[bool] = False

    @classmethod
    def create(cls, context: RunnerContext) -> SpeculativeDecoding | None:
        from vllm_core.plugins import registry

        config = context.config.speculative
        if config is None:
            return None
        proposer_cls = registry.proposers().get(config.method)
        logger.info("speculative decoding: %s, %d tokens a step", config.method, config.num_speculative_tokens)
        return cls(config, proposer_cls(config, context))

    def __init__(self, config: SpeculativeConfig, proposer: Proposer) -> None:
        self.config = config
        self.proposer = proposer
        self.num_drafts = 0
        """Steps in which a request verified drafts."""
        self.num_draft_tokens = 0
        self.num_accepted_tokens = 0
        self.accepted_per_pos = [0] * config.num_speculative_tokens
        """How often the draft at each position was accepted."""

    def accept_tokens(self, rows: Sequence[ScheduledRequest], sampled: SampledTokens) -> None:
        if sampled.lists is None:
            return
        for row, tokens in zip(rows, sampled.lists):
            k = len(row.draft_token_ids)
            if not k:
                continue
            accepted = max(len(tokens) - 1, 0)
            self.num_drafts += 1
            self.num_draft_tokens += k
            self.num_accepted_tokens += accepted
            for pos in range(min(accepted, len(self.accepted_per_pos))):
                self.accepted_per_pos[pos] += 1

    def propose_drafts(self, rows: Sequence[ScheduledRequest], sampled: SampledTokens) -> dict[str, list[int]] | None:
        eligible = [j for j, r in enumerate(rows) if draftable(r.sampling_params)]
        if not eligible:
            return None
        new_tokens = sampled.rows(eligible)
        histories = [
            [*rows[j].prompt_token_ids, *rows[j].output_token_ids, *toks] for j, toks in zip(eligible, new_tokens)
        ]
        k = self.config.num_speculative_tokens
        drafts = self.proposer.propose(histories, [k] * len(eligible))
        return {rows[j].req_id: d for j, d in zip(eligible, drafts) if d}
