"""Multi-token steps: the sampling rows of requests that carry draft tokens.

A request with ``k`` drafts feeds ``[last token, d_1 .. d_k]`` and gets ``k + 1`` logits rows:
row ``t`` scores the position after ``d_t`` (row 0: after the last token). For the sampler each
row looks like a request whose output already holds the drafts before it, so penalties,
``min_tokens`` and bad words see what the sequence would be at that position.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from copy import copy

import torch

from vllm_core.core.sched_output import ScheduledRequest
from vllm_core.sample.rejection import DraftBatch
from vllm_core.worker.transfer import to_device


def expand_draft_rows(rows: Sequence[ScheduledRequest]) -> list[ScheduledRequest]:
    """One row per logits row: ``k + 1`` per request, row ``t`` with drafts ``d_1 .. d_t`` appended
    to its output."""
    out: list[ScheduledRequest] = []
    for r in rows:
        drafts = list(r.draft_token_ids)
        out.append(r)
        if not drafts:
            continue
        extended = [*r.output_token_ids, *drafts]
        base = len(extended) - len(drafts)
        for t in range(1, len(drafts) + 1):
            row = _clone(r)
            row.output_token_ids = extended[: base + t]
            row.num_output_tokens = r.num_output_tokens + t
            out.append(row)
    return out


def _clone(r: ScheduledRequest) -> ScheduledRequest:
    """A shallow copy, ~5x cheaper than ``copy.copy`` (and ``dataclasses.replace``, which re-runs
    ``__init__`` field by field): ``k`` of them per drafted request, every verification step."""
    if not hasattr(r, "__dict__"):
        return copy(r)
    row = ScheduledRequest.__new__(ScheduledRequest)
    row.__dict__.update(r.__dict__)
    return row


def draft_batch(
    rows: Sequence[ScheduledRequest],
    device: torch.device,
    probs_of: Callable[[str, Sequence[int]], torch.Tensor | None] | None = None,
    vocab_size: int = 0,
) -> DraftBatch:
    """The rows' drafts, flattened in row order. ``probs_of(req_id, drafts)``: the distributions
    a request's drafts were sampled from, or None (deterministic drafts: one-hot rows); when no
    row has any, the batch carries no probabilities."""
    flat = [int(t) for r in rows for t in r.draft_token_ids]
    # through pinned memory: a pageable copy would wait for the forward pass in flight
    token_ids = to_device(torch.tensor(flat, dtype=torch.int64), device)
    num = [len(r.draft_token_ids) for r in rows]
    found = [probs_of(r.req_id, r.draft_token_ids) for r in rows] if probs_of is not None else []
    if not any(p is not None for p in found):
        return DraftBatch(token_ids, num, host_token_ids=flat)
    parts = []
    for r, p in zip(rows, found):
        if p is None:
            p = torch.zeros(len(r.draft_token_ids), vocab_size, device=device)
            p[torch.arange(len(r.draft_token_ids), device=device), torch.tensor(list(r.draft_token_ids), device=device)] = 1.0
        parts.append(p.to(device=device, dtype=torch.float32))
    return DraftBatch(token_ids, num, torch.cat(parts), host_token_ids=flat)
