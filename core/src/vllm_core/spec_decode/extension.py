"""``SpeculativeDecoding``: the runner extension that drafts tokens with the configured proposer.

After every step it asks the proposer for drafts of each eligible row that sampled, as many as
the ``SpeculationPolicy`` allows (none above ``disable_by_batch_size`` requests, none for a while
for a request whose drafts keep being rejected); the runner returns them with the step's tokens
and the scheduler feeds them next step. Rows are not drafted for when verification could change
what they would report: ``prompt_logprobs`` only matter at prefill, so every kind of request is
drafted for (greedy and random sampling, seeds, logprobs, penalties, structured outputs, stop
rules), each verified as ``vllm_core.sample.rejection`` describes. The counters match vLLM's
``spec_decode`` metrics and are logged every ``LOG_INTERVAL_S`` seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import torch

from vllm_core.config import SpeculativeConfig
from vllm_core.extensions.runner import RunnerContext, RunnerExtension, SampledTokens, StepHiddenStates
from vllm_core.spec_decode.metrics import SpecDecodeCounters, SpecDecodeStats
from vllm_core.spec_decode.policy import SpeculationPolicy
from vllm_core.spec_decode.proposer import Proposer

if TYPE_CHECKING:
    from vllm_core.config import EngineConfig
    from vllm_core.core.sched_output import ScheduledRequest, SchedulerOutput
    from vllm_core.worker.input_batch import ModelInputs

logger = logging.getLogger(__name__)


def proposer_lookahead_slots(config: SpeculativeConfig | None) -> int:
    """KV slots the configured proposer needs past each request's scheduled tokens (0: none)."""
    if config is None:
        return 0
    from vllm_core.plugins import registry

    slots: int = registry.proposers().get(config.method).num_lookahead_slots(config)
    return slots


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
        logger.info(
            "speculative decoding: %s, %d tokens a step, off above %s requests a step or below %.0f%% acceptance",
            config.method, config.num_speculative_tokens, config.disable_by_batch_size,
            100 * config.min_acceptance_rate,
        )
        return cls(config, proposer_cls(config, context))

    def __init__(self, config: SpeculativeConfig, proposer: Proposer) -> None:
        self.config = config
        self.proposer = proposer
        self.policy = SpeculationPolicy(config)
        self.counters = SpecDecodeCounters(config.num_speculative_tokens)

    # the counters under their vLLM names (tests and older callers read these)
    @property
    def num_drafts(self) -> int:
        return self.counters.num_drafts

    @property
    def num_draft_tokens(self) -> int:
        return self.counters.num_draft_tokens

    @property
    def num_accepted_tokens(self) -> int:
        return self.counters.num_accepted_tokens

    @property
    def accepted_per_pos(self) -> list[int]:
        return self.counters.accepted_per_pos

    def stats(self) -> SpecDecodeStats:
        return self.counters.snapshot()

    def accept_tokens(self, rows: Sequence[ScheduledRequest], sampled: SampledTokens) -> None:
        if sampled.lists is None:
            return
        for row, tokens in zip(rows, sampled.lists):
            k = len(row.draft_token_ids)
            if not k:
                continue
            accepted = max(len(tokens) - 1, 0)
            self.counters.record(k, accepted)
            self.policy.record(row.req_id, k, accepted)
        self.counters.maybe_log()

    def propose_drafts(self, rows: Sequence[ScheduledRequest], sampled: SampledTokens) -> dict[str, list[int]] | None:
        max_drafts = self.policy.max_drafts([r.req_id for r in rows], len(rows))
        eligible = [j for j, k in enumerate(max_drafts) if k > 0]
        if not eligible:
            return None
        new_tokens = sampled.rows(eligible)
        drafts = self.proposer.propose_step(
            [rows[j] for j in eligible], new_tokens, [max_drafts[j] for j in eligible]
        )
        return {rows[j].req_id: d for j, d in zip(eligible, drafts) if d}

    def allows_async_step(self, req_ids: Sequence[str]) -> bool:
        return self.policy.allows_async_step(req_ids)

    @classmethod
    def allows_async_step_by_config(cls, config: EngineConfig, req_ids: Sequence[str]) -> bool:
        # only the batch-size rule: each request's acceptance lives with the runner
        return config.speculative is not None and SpeculationPolicy.over_batch_limit(config.speculative, len(req_ids))

    def draft_probs(self, req_id: str, draft_token_ids: Sequence[int]) -> torch.Tensor | None:
        return self.proposer.draft_probs(req_id, draft_token_ids)

    def finish_requests(self, req_ids: set[str]) -> None:
        self.proposer.finish_requests(req_ids)
        self.policy.finish_requests(req_ids)

    def hidden_states_wanted(self) -> tuple[int, ...] | None:
        return self.proposer.hidden_states_wanted()

    def accept_hidden_states(self, output: SchedulerOutput, inputs: ModelInputs, hidden: StepHiddenStates) -> None:
        self.proposer.accept_hidden_states(output, inputs, hidden)

    def kv_bytes_per_block(self, block_size: int) -> int:
        return self.proposer.kv_bytes_per_block(block_size)

    def kv_cache_initialized(self, num_blocks: int, block_size: int) -> None:
        self.proposer.kv_cache_initialized(num_blocks, block_size)
