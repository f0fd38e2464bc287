"""Flatten a ``SchedulerOutput`` into the step's tensors (numpy on the host, one copy each),
padded to the platform's step shapes when it fixes them (``step_shapes``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vllm_core.attention.metadata import AttentionMetadata
from vllm_core.core.sched_output import SchedulerOutput
from vllm_core.errors import EngineError
from vllm_core.worker.step_shapes import PAD_SEQ_LEN, PAD_SLOT_ID, StepShapes
from vllm_core.worker.transfer import to_device_many


@dataclass
class ModelInputs:
    input_ids: torch.Tensor
    """[T] int64 (T: the step's tokens, or its token bucket with static shapes)"""
    positions: torch.Tensor
    """[T] int64; a runner extension may replace it with [3, T] (M-RoPE: temporal, height,
    width positions) in ``prepare_step`` for a model that takes them."""
    metadata: AttentionMetadata
    logits_indices: torch.Tensor
    """[L] int64: the token row whose hidden state gives each logits row: one per sampling
    request, ``k + 1`` for a request with ``k`` drafts (padded rows point at token 0)."""
    sample_rows: list[int]
    """Index into ``scheduled`` of each sampling request."""
    placeholder_positions: list[int]
    """Token rows holding a placeholder (a token sampled by the step in flight)."""
    placeholder_reqs: list[int]
    """Index into ``scheduled`` of the request of each placeholder."""
    num_logits_rows: int = -1
    """Real logits rows (the rest of ``logits_indices`` is padding); -1: all of them."""
    num_actual_tokens: int = -1
    """Real tokens (the rest of ``input_ids`` is padding); -1: all of them."""
    inputs_embeds: torch.Tensor | None = None
    """[T, hidden]: set by a runner extension in ``prepare_step`` (image embeddings merged with
    the tokens' embeddings), the model reads it instead of embedding ``input_ids``; None: the
    model embeds ``input_ids`` (API 1.2)."""

    def __post_init__(self) -> None:
        if self.num_logits_rows < 0:
            self.num_logits_rows = int(self.logits_indices.shape[0])
        if self.num_actual_tokens < 0:
            self.num_actual_tokens = int(self.input_ids.shape[0])


def prepare_inputs(
    output: SchedulerOutput, block_size: int, device: torch.device, shapes: StepShapes | None = None
) -> ModelInputs:
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
    ends = qsl[1:]
    logits_indices = np.asarray(
        [p for i in sample_rows for p in range(ends[i] - 1 - len(scheduled[i].draft_token_ids), ends[i])],
        dtype=np.int64,
    ) if any(scheduled[i].draft_token_ids for i in sample_rows) else ends[sample_rows] - 1
    num_logits = len(logits_indices)
    placeholder_reqs = req_of_token[placeholder_positions].tolist()

    if shapes is not None:
        shape = shapes.select(total, num_reqs, max_blocks)
        if shape is None:
            raise EngineError(
                f"a step of {total} tokens over {num_reqs} requests ({max_blocks} blocks each) exceeds the "
                f"platform's largest step shape ({shapes.describe()}); the scheduler's limits must not exceed it"
            )
        input_ids, positions, slot_mapping, seq_lens, qsl, block_tables, q_lens = _pad(
            shape.num_tokens, shape.num_reqs, shape.num_blocks,
            input_ids, positions, slot_mapping, seq_lens, qsl, block_tables, q_lens,
        )
        logits_indices = np.concatenate(
            [logits_indices, np.zeros(max(shape.num_reqs - num_logits, 0), dtype=np.int64)]
        )
    num_decodes = 0
    for q in q_lens:
        if q != 1:
            break
        num_decodes += 1

    # one copy per dtype on accelerators that take pinned memory (transfer.to_device_many)
    input_ids_t, positions_t, slots_t, logits_t, tables_t, seq_lens_t, qsl_t = to_device_many(
        [(input_ids, torch.int64), (positions, torch.int64), (slot_mapping, torch.int64),
         (np.asarray(logits_indices, dtype=np.int64), torch.int64),
         (block_tables, torch.int32), (seq_lens, torch.int32), (qsl, torch.int32)],
        device,
    )
    metadata = AttentionMetadata(
        slot_mapping=slots_t,
        block_tables=tables_t,
        seq_lens=seq_lens_t,
        query_start_loc=qsl_t,
        seq_lens_cpu=seq_lens.tolist(),
        query_start_loc_cpu=qsl.tolist(),
        max_query_len=int(q_lens.max()),
        max_seq_len=int(seq_lens.max()),
        num_decodes=num_decodes,
        block_size=block_size,
    )
    return ModelInputs(
        input_ids=input_ids_t,
        positions=positions_t,
        metadata=metadata,
        logits_indices=logits_t,
        sample_rows=sample_rows,
        placeholder_positions=placeholder_positions.tolist(),
        placeholder_reqs=placeholder_reqs,
        num_logits_rows=num_logits,
        num_actual_tokens=total,
    )


def _pad(
    num_tokens: int, num_reqs: int, num_blocks: int,
    input_ids: np.ndarray, positions: np.ndarray, slot_mapping: np.ndarray, seq_lens: np.ndarray,
    qsl: np.ndarray, block_tables: np.ndarray, q_lens: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """Pad one step's host arrays to a bucket (see ``vllm_core.worker.step_shapes``)."""
    total, reqs = len(input_ids), len(seq_lens)
    pad_t, pad_r = num_tokens - total, num_reqs - reqs
    pad_q = np.zeros(pad_r, dtype=np.int64)
    pad_q[: min(pad_t, pad_r)] = 1  # one token per padded request while they last
    q_lens = np.concatenate([q_lens, pad_q])
    qsl = np.concatenate([qsl, qsl[-1] + np.cumsum(pad_q)])
    seq_lens = np.concatenate([seq_lens, np.full(pad_r, PAD_SEQ_LEN, dtype=seq_lens.dtype)])
    tables = np.zeros((num_reqs, num_blocks), dtype=np.int32)
    tables[:reqs, : block_tables.shape[1]] = block_tables
    return (
        np.concatenate([input_ids, np.zeros(pad_t, dtype=np.int64)]),
        np.concatenate([positions, np.zeros(pad_t, dtype=positions.dtype)]),
        np.concatenate([slot_mapping, np.full(pad_t, PAD_SLOT_ID, dtype=slot_mapping.dtype)]),
        seq_lens, qsl, tables, q_lens,
    )
