"""Draft-model proposer: a small model with the target's vocabulary drafts ``k`` tokens.

``speculative_config={"method": "draft_model", "model": PATH, "num_speculative_tokens": k}``.

The draft model is loaded by the same loader on the same platform and keeps a paged KV cache of
its own *beside* the target's: one cache per draft layer with the target's number of blocks and
block size, addressed through the target's block tables and slot mapping. A request's block ids
therefore mean the same positions in both caches, and the draft needs no block manager.

After every target step, for each row it drafts for (``propose_step``):

1. catch up: the draft model runs over the row's known tokens it has not seen (its whole prompt
   the first time; afterwards the tokens accepted in the step), writing their KV; the logits
   at the last one give draft 1;
2. ``k - 1`` decode passes: draft ``t`` is fed at its position, giving draft ``t + 1``.

Greedy and seeded requests get the draft's argmax (deterministic drafts); other random requests
get drafts sampled from the draft's own distribution, which is handed to verification
(``draft_probs``) so rejection sampling keeps the target's distribution.

All rows go through each pass together (one ragged batch, then batches of one token per row,
which replay the platform's captured graphs when it has them: CUDA graphs, CPU kernel plans).
Rolling back is bookkeeping: the draft's KV counts as valid for the known tokens only
(``_seen``); the drafted positions are overwritten by the next catch-up, exactly as the target's
rejected drafts are. The scheduler keeps ``k`` slots allocated past each request's scheduled
tokens (``num_lookahead_slots``) so the drafted positions have blocks; a row whose blocks do not
reach far enough gets fewer drafts. A draft KV that is stale (a preempted request that starts
again in other blocks is caught up from position 0) only costs acceptance: the target verifies
every draft, so the output never depends on the draft model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from vllm_core.config import SpeculativeConfig
from vllm_core.core.sched_output import ScheduledRequest, SchedulerOutput
from vllm_core.errors import ConfigError
from vllm_core.extensions.runner import RunnerContext
from vllm_core.spec_decode.proposer import Proposer

if TYPE_CHECKING:
    from vllm_core.model_executor.model_loader.loader import LoadedModel
    from vllm_core.worker.graph_runner import GraphRunner

logger = logging.getLogger(__name__)


def _known_slice(row: ScheduledRequest, new: Sequence[int], start: int) -> list[int]:
    """``(prompt + output + new)[start:]`` without building the whole history."""
    prompt, output = row.prompt_token_ids, row.output_token_ids
    p, o = len(prompt), len(output)
    out: list[int] = []
    if start < p:
        out.extend(prompt[start:])
    if start < p + o:
        out.extend(output[max(start - p, 0):])
    out.extend(new[max(start - p - o, 0):])
    return out


class DraftModelProposer(Proposer):
    """Drafts from a small model run by the same platform, with its own paged KV cache."""

    method: ClassVar[str] = "draft_model"

    @classmethod
    def num_lookahead_slots(cls, config: SpeculativeConfig) -> int:
        return config.num_speculative_tokens

    def __init__(self, config: SpeculativeConfig, context: RunnerContext) -> None:
        super().__init__(config, context)
        from vllm_core.model_executor.model_loader.loader import load_model

        if context.platform is None:
            raise ConfigError("the draft_model proposer needs the runner's platform (RunnerContext.platform)")
        self.platform = context.platform
        target = context.config.model
        model_config = target.model_copy(update={"model": config.model, "tokenizer": None, "skip_tokenizer_init": True})
        self.loaded: LoadedModel = load_model(model_config, self.platform, use_tqdm=False)
        vocab = self.loaded.hf_config.vocab_size
        if vocab != context.vocab_size:
            raise ConfigError(
                f"draft model {config.model!r} has a vocabulary of {vocab} tokens but the target has "
                f"{context.vocab_size}; a draft model must share the target's tokenizer and vocabulary"
            )
        self.model: Any = self.loaded.model
        self.device = self.platform.device()
        self.block_size = 0
        self._seen: dict[str, int] = {}
        """req_id -> tokens whose KV the draft cache holds (a prefix of the request's known tokens)."""
        self._first_block: dict[str, int] = {}
        """req_id -> its first block id when caught up (a different one: it restarted elsewhere)."""
        self._sampled: dict[str, tuple[list[int], list[torch.Tensor]]] = {}
        """req_id -> its last sampled drafts and the distributions they came from ([k, vocab])."""
        self.generator = self.platform.make_generator(context.config.model.seed + 1)
        self.graph_runner: GraphRunner | None = None
        logger.info("draft model %s loaded (%s)", config.model, type(self.model).__name__)

    # ---------------------------------------------------------------------------- KV cache
    def kv_bytes_per_block(self, block_size: int) -> int:
        from vllm_core.worker.model_runner import kv_bytes_per_block

        return kv_bytes_per_block(self.loaded, block_size)

    def kv_cache_initialized(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        for attn in self.model.attention_layers():
            shape = attn.impl.kv_cache_shape(num_blocks, block_size, attn.num_kv_heads, attn.head_size)
            attn.kv_cache = self.platform.allocate_kv_cache(tuple(shape), self.loaded.dtype)
        self._seen.clear()
        self._first_block.clear()
        engine = self.context.config
        if not engine.model.enforce_eager:  # the decode passes replay the platform's graphs
            self.graph_runner = self.platform.make_graph_runner(
                self.model, engine.scheduler.max_num_seqs, self.loaded.max_model_len, block_size
            )
            if self.graph_runner is not None:
                self.graph_runner.capture()
                logger.info("draft model: captured graphs for batch sizes %s", self.graph_runner.captured_sizes)

    def finish_requests(self, req_ids: set[str]) -> None:
        for rid in req_ids:
            self._seen.pop(rid, None)
            self._first_block.pop(rid, None)
            self._sampled.pop(rid, None)

    # ------------------------------------------------------------------------------ drafts
    def propose_step(
        self, rows: Sequence[ScheduledRequest], new_tokens: Sequence[Sequence[int]], max_drafts: Sequence[int]
    ) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in rows]
        if not self.block_size:
            return out  # before the KV cache exists (the profiling run)
        catch_up: list[ScheduledRequest] = []
        members: list[int] = []
        budget: list[int] = []
        for i, (row, new, k) in enumerate(zip(rows, new_tokens, max_drafts)):
            if k <= 0 or not row.block_ids:
                continue
            known = len(row.prompt_token_ids) + len(row.output_token_ids) + len(new)
            seen = self._seen.get(row.req_id, 0)
            if row.start_pos < seen - 1 or self._first_block.get(row.req_id, row.block_ids[0]) != row.block_ids[0]:
                seen = 0  # preempted and started again: its KV lives in other blocks now
            # positions written: seen .. known - 1 (catch-up), known .. known + k - 2 (drafts 1 .. k-1)
            capacity = min(len(row.block_ids) * self.block_size, self.loaded.max_model_len)
            k = min(k, capacity - known + 1)
            if k <= 0 or seen >= known:
                continue
            catch_up.append(ScheduledRequest(
                row.req_id, _known_slice(row, new, seen), seen, list(row.block_ids), row.sampling_params, True, 0, None,
            ))
            members.append(i)
            budget.append(k)
            self._seen[row.req_id] = known
            self._first_block[row.req_id] = row.block_ids[0]
        if not catch_up:
            return out
        for r in catch_up:
            self._sampled.pop(r.req_id, None)
        tokens = self._forward(catch_up)
        for j, i in enumerate(members):
            out[i].append(tokens[j])
        for t in range(1, max(budget)):
            live = [j for j in range(len(members)) if budget[j] > t]
            if not live:
                break
            step = [
                ScheduledRequest(
                    catch_up[j].req_id, [out[members[j]][-1]], catch_up[j].start_pos + catch_up[j].num_tokens + t - 1,
                    catch_up[j].block_ids, catch_up[j].sampling_params, True, 0, None,
                )
                for j in live
            ]
            tokens = self._forward(step)
            for j, tok in zip(live, tokens):
                out[members[j]].append(tok)
        for r in catch_up:
            rows_q = self._sampled.get(r.req_id)
            if rows_q is not None:
                self._sampled[r.req_id] = (rows_q[0], [torch.cat(rows_q[1])])
        return out

    def _forward(self, rows: list[ScheduledRequest]) -> list[int]:
        """One draft-model pass over ``rows``: the next token of each, greedy for greedy and
        seeded requests (a seeded request's drafts must not depend on the batch), else sampled
        from the draft's distribution after temperature / top-k / top-p / min-p, which is kept
        for verification (``draft_probs``)."""
        from vllm_core.sample.metadata import SamplingMetadata
        from vllm_core.sample.sampler import apply_warpers
        from vllm_core.worker.input_batch import prepare_inputs

        inputs = prepare_inputs(SchedulerOutput(rows, sum(r.num_tokens for r in rows)), self.block_size, self.device)
        hidden = self.graph_runner.try_run(inputs) if self.graph_runner is not None else None
        if hidden is None:
            hidden = self.model(inputs.input_ids, inputs.positions, inputs.metadata)
        logits = self.model.compute_logits(hidden.index_select(0, inputs.logits_indices)).float()
        greedy = logits.argmax(dim=-1)
        sampled_rows = [
            i for i, r in enumerate(rows) if not r.sampling_params.is_greedy and r.sampling_params.seed is None
        ]
        if not sampled_rows:
            result: list[int] = greedy.tolist()
            return result
        picked = [rows[i] for i in sampled_rows]
        index = torch.tensor(sampled_rows, device=logits.device)
        metadata = SamplingMetadata.build(picked, {}, self.device)
        probs = apply_warpers(logits.index_select(0, index), metadata).softmax(dim=-1)
        noise = torch.empty_like(probs).exponential_(generator=self.generator)
        tokens = greedy.index_copy(0, index, (probs / noise).argmax(dim=-1))
        for j, r in enumerate(picked):
            entry = self._sampled.setdefault(r.req_id, ([], []))
            entry[1].append(probs[j : j + 1])
        result = tokens.tolist()
        for i in sampled_rows:
            self._sampled[rows[i].req_id][0].append(result[i])
        return result

    def draft_probs(self, req_id: str, draft_token_ids: Sequence[int]) -> torch.Tensor | None:
        entry = self._sampled.get(req_id)
        n = len(draft_token_ids)
        if entry is None or entry[0][:n] != list(draft_token_ids):
            return None
        return entry[1][0][:n]

