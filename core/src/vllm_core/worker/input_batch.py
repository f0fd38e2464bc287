"""Flatten a ``SchedulerOutput`` into the step's tensors (numpy on the host, one copy each)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vllm_core.attention.metadata import AttentionMetadata
from vllm_core.core.sched_output import SchedulerOutput
from vllm_core.worker.transfer import to_device


@dataclass
class ModelInputs:
    input_ids: torch.Tensor
    """[T] int64"""
    positions: torch.Tensor
    """[T] int64"""
    metadata: AttentionMetadata
    logits_indices: torch.Tensor
    """[S] int64: the token row whose hidden state gives each sampling request's logits."""
    sample_rows: list[int]
    """Index into ``scheduled`` of each sampling request."""
    placeholder_positions: list[int]
    """Token rows holding a placeholder (a token sampled by the step in flight)."""
    placeholder_reqs: list[int]
    """Index into ``scheduled`` of the request of each placeholder."""


def prepare_inputs(output: SchedulerOutput, block_size: int, device: torch.device) -> ModelInputs:
    scheduled = output.scheduled
    num_reqs = len(scheduled)
    q_lens = np.fromiter((s.num_tokens for s in scheduled), dtype=np.int64, count=num_reqs)
    starts = np.fromiter((s.start_pos for s in scheduled), dtype=np.int64, count=num_reqs)
    qsl = np.zeros(num_reqs + 1, dtype=np.int64)
    np.cumsum(q_lens, out=qsl[1:])
    total = int(qsl[-1])
    seq_lens = starts + q_lens

    input_ids = np.fromiter(
        (t for s in scheduled for t in s.token_ids), dtype=np.int64, count=total
    )
    # position of every token: its request's start + offset within the chunk
    req_of_token = np.repeat(np.arange(num_reqs), q_lens)
    positions = starts[req_of_token] + (np.arange(total) - qsl[:-1][req_of_token])

    max_blocks = max(len(s.block_ids) for s in scheduled)
    block_tables = np.zeros((num_reqs, max_blocks), dtype=np.int32)
    for i, s in enumerate(scheduled):
        block_tables[i, : len(s.block_ids)] = s.block_ids
    block_of_token = block_tables[req_of_token, positions // block_size].astype(np.int64)
    slot_mapping = block_of_token * block_size + positions % block_size

    placeholder_positions = np.flatnonzero(input_ids < 0)
    sample_rows = [i for i, s in enumerate(scheduled) if s.sample]
    logits_indices = qsl[1:][sample_rows] - 1
    num_decodes = 0
    for q in q_lens:
        if q != 1:
            break
        num_decodes += 1

    def t(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return to_device(a, device, dtype)

    metadata = AttentionMetadata(
        slot_mapping=t(slot_mapping, torch.int64),
        block_tables=t(block_tables, torch.int32),
        seq_lens=t(seq_lens, torch.int32),
        query_start_loc=t(qsl, torch.int32),
        seq_lens_cpu=seq_lens.tolist(),
        query_start_loc_cpu=qsl.tolist(),
        max_query_len=int(q_lens.max()),
        max_seq_len=int(seq_lens.max()),
        num_decodes=num_decodes,
        block_size=block_size,
    )
    return ModelInputs(
        input_ids=t(input_ids, torch.int64),
        positions=t(positions, torch.int64),
        metadata=metadata,
        logits_indices=t(np.asarray(logits_indices, dtype=np.int64), torch.int64),
        sample_rows=sample_rows,
        placeholder_positions=placeholder_positions.tolist(),
        placeholder_reqs=req_of_token[placeholder_positions].tolist(),
    )
