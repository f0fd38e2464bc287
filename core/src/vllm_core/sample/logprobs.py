"""Logprobs of sampled tokens and of prompt tokens, computed on the step's tensors.

Sampled tokens: one ``log_softmax`` over the rows that ask, on the raw logits by default (vLLM's
``raw_logprobs``) or on the sampler's processed logits. Prompt tokens: the hidden states of a
prefill chunk's positions go through the LM head only for requests that ask, in slices so a long
chunk never holds a [chunk, vocab] float32 tensor at once; they always score the raw model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from vllm_core.logprobs import LogprobsMode, PositionLogprobs, PromptLogprobsChunk
from vllm_core.sample.metadata import SamplingMetadata

if TYPE_CHECKING:
    from vllm_core.core.sched_output import ScheduledRequest
    from vllm_core.sample.sampler import Sampler

PROMPT_LOGITS_SLICE = 512
"""Positions whose prompt logprobs are computed together."""


def gather_logprobs(values: torch.Tensor, targets: torch.Tensor, num_topk: Sequence[int]) -> list[PositionLogprobs]:
    """values: [N, vocab] float32 (logprobs or logits); targets: [N] int64; num_topk[i] >= 0 or
    -1 (the whole vocabulary) -> the target's value and rank plus the top-k of each row."""
    vocab = values.shape[-1]
    ks = [vocab if k == -1 else min(k, vocab) for k in num_topk]
    target_vals = values.gather(1, targets.unsqueeze(1))
    ranks = (values >= target_vals).sum(dim=-1)
    ids, vals = targets.unsqueeze(1), target_vals
    if max(ks, default=0) > 0:
        top_vals, top_ids = values.topk(max(ks), dim=-1)
        ids, vals = torch.cat([ids, top_ids], dim=1), torch.cat([vals, top_vals], dim=1)
    ids_l, vals_l, ranks_l = ids.tolist(), vals.tolist(), ranks.tolist()
    return [PositionLogprobs(i[: k + 1], v[: k + 1], r) for i, v, r, k in zip(ids_l, vals_l, ranks_l, ks)]


def sample_logprobs(
    logits: torch.Tensor,
    sampled: torch.Tensor,
    metadata: SamplingMetadata,
    rows: Sequence[ScheduledRequest],
    sampler: Sampler,
    mode: LogprobsMode = "raw_logprobs",
) -> dict[str, PositionLogprobs] | None:
    """req_id -> the sampled token's logprob, rank and top-k, for the rows that ask."""
    if metadata.max_num_logprobs is None:
        return None
    want = [j for j, r in enumerate(rows) if r.sampling_params.logprobs is not None]
    source = logits if mode.startswith("raw") else sampler.processed_logits(logits, metadata)
    index = torch.tensor(want, dtype=torch.int64, device=logits.device)
    values = source.index_select(0, index).float()
    if mode.endswith("logprobs"):
        values = values.log_softmax(dim=-1)
    ks = [rows[j].sampling_params.logprobs or 0 for j in want]
    positions = gather_logprobs(values, sampled.index_select(0, index), ks)
    return {rows[j].req_id: p for j, p in zip(want, positions)}


def verified_logprobs(
    logits: torch.Tensor,
    accepted: Sequence[Sequence[int]],
    metadata: SamplingMetadata,
    rows: Sequence[ScheduledRequest],
    sampler: Sampler,
    mode: LogprobsMode = "raw_logprobs",
) -> dict[str, list[PositionLogprobs]] | None:
    """Multi-token steps: req_id -> the logprobs of each token a request kept, for the requests
    that ask. ``logits`` / ``metadata`` have ``k + 1`` rows per request of ``rows`` (in order);
    the ``t``-th kept token is scored by its request's row ``t``."""
    if metadata.max_num_logprobs is None:
        return None
    index: list[int] = []
    targets: list[int] = []
    ks: list[int] = []
    owners: list[tuple[str, int]] = []
    first = 0
    for r, toks in zip(rows, accepted):
        if r.sampling_params.logprobs is not None:
            index.extend(range(first, first + len(toks)))
            targets.extend(toks)
            ks.extend([r.sampling_params.logprobs] * len(toks))
            owners.append((r.req_id, len(toks)))
        first += len(r.draft_token_ids) + 1
    if not index:
        return None
    source = logits if mode.startswith("raw") else sampler.processed_logits(logits, metadata)
    values = source.index_select(0, torch.tensor(index, dtype=torch.int64, device=logits.device)).float()
    if mode.endswith("logprobs"):
        values = values.log_softmax(dim=-1)
    positions = gather_logprobs(values, torch.tensor(targets, dtype=torch.int64, device=logits.device), ks)
    out: dict[str, list[PositionLogprobs]] = {}
    offset = 0
    for req_id, n in owners:
        out[req_id] = positions[offset : offset + n]
        offset += n
    return out


def prompt_logprobs(
    compute_logits: Callable[[torch.Tensor], torch.Tensor],
    hidden: torch.Tensor,
    scheduled: Sequence[ScheduledRequest],
    query_start_loc: Sequence[int],
    before_logits: Callable[[int, int], None] | None = None,
) -> dict[str, PromptLogprobsChunk] | None:
    """req_id -> the logprobs of the prompt tokens this step's chunk predicts.
    ``before_logits(first_row, num_rows)`` is told the hidden rows of each ``compute_logits`` call.

    The logits at position ``p`` score prompt token ``p + 1``; a chunk covering positions
    ``[start, start + n)`` scores prompt tokens ``start + 1 .. min(start + n, len(prompt) - 1)``.
    A recomputed chunk (after preemption) scores the same tokens again, with the same values.
    """
    out: dict[str, PromptLogprobsChunk] = {}
    for i, s in enumerate(scheduled):
        k = s.sampling_params.prompt_logprobs
        if k is None:
            continue
        first, last = s.start_pos, min(s.start_pos + s.num_tokens, len(s.prompt_token_ids) - 1)
        if first >= last:
            continue
        positions: list[PositionLogprobs] = []
        for lo in range(first, last, PROMPT_LOGITS_SLICE):
            hi = min(lo + PROMPT_LOGITS_SLICE, last)
            row0 = query_start_loc[i] + lo - first
            if before_logits is not None:
                before_logits(row0, hi - lo)
            values = compute_logits(hidden[row0 : row0 + hi - lo]).float().log_softmax(dim=-1)
            targets = torch.tensor(s.prompt_token_ids[lo + 1 : hi + 1], dtype=torch.int64, device=values.device)
            positions += gather_logprobs(values, targets, [k] * (hi - lo))
        out[s.req_id] = PromptLogprobsChunk(first + 1, positions)
    return out or None
