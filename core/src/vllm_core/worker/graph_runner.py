"""The ``GraphRunner`` interface: replay captured graphs for decode batches.

A platform that can capture graphs (CUDA graphs; the CPU platform's recorded kernel plans)
returns one from ``Platform.make_graph_runner``; the model runner asks it first and runs eagerly
when it declines (prefills, batches larger than the largest captured size, ``enforce_eager``).

``DecodeBuffers`` holds what every such runner needs: persistent input buffers that a captured
graph reads, the batch-size buckets, and the copy of one step's inputs into them. Its buckets
and padding are the static step shapes' (``vllm_core.worker.step_shapes``), kept in memory the
graphs read in place.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from vllm_core.attention.metadata import AttentionMetadata
from vllm_core.worker.input_batch import ModelInputs
from vllm_core.worker.step_shapes import PAD_SEQ_LEN, PAD_SLOT_ID, StepShapes
from vllm_core.worker.transfer import to_device


class GraphRunner(ABC):
    """Captures the model's forward for fixed decode batch sizes and replays it."""

    @abstractmethod
    def capture(self) -> None:
        """Capture every batch-size bucket (largest first, one memory pool)."""

    @abstractmethod
    def try_run(self, inputs: ModelInputs) -> torch.Tensor | None:
        """Hidden states [num_tokens, hidden] by graph replay, or None when this batch is not
        a capturable decode batch."""

    @property
    @abstractmethod
    def captured_sizes(self) -> list[int]:
        """Batch sizes with a captured graph."""


def batch_buckets(max_num_seqs: int, limit: int | None = None) -> list[int]:
    """1, 2, 4, 8, then every 16 up to ``max_num_seqs`` (which is always included), or up to
    ``limit`` when that is smaller."""
    top = max_num_seqs if limit is None else min(max_num_seqs, limit)
    sizes = [s for s in (1, 2, 4, 8) if s <= top]
    sizes += list(range(16, top + 1, 16))
    if top not in sizes:
        sizes.append(top)
    return sorted(set(sizes))


MAX_FLAT_QUERY = 9
"""Longest row a graph replay takes as one decode row per token (1 + 8 drafts)."""


class DecodeBuffers:
    """Persistent decode inputs for ``sizes[-1]`` rows, read by every captured bucket.

    A batch of ``n`` decode rows is copied in by ``load`` and runs as the smallest bucket
    ``>= n`` of ``shapes`` (one token per request); the padded rows are made harmless as every
    static step shape's: ``slot_mapping = PAD_SLOT_ID`` (the KV write skips them) and
    ``seq_len = PAD_SEQ_LEN`` (their attention reads one valid slot of block 0).
    """

    def __init__(self, sizes: list[int], max_model_len: int, block_size: int, device: torch.device) -> None:
        self.sizes = sizes
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.max_blocks = -(-max_model_len // block_size)
        self.shapes = StepShapes(tuple(sizes), tuple(sizes), (self.max_blocks,))
        n = sizes[-1]
        self.input_ids = torch.zeros(n, dtype=torch.int64, device=device)
        self.positions = torch.zeros(n, dtype=torch.int64, device=device)
        self.slot_mapping = torch.full((n,), PAD_SLOT_ID, dtype=torch.int64, device=device)
        self.block_tables = torch.zeros(n, self.max_blocks, dtype=torch.int32, device=device)
        self.seq_lens = torch.full((n,), PAD_SEQ_LEN, dtype=torch.int32, device=device)
        self.query_start_loc = torch.arange(n + 1, dtype=torch.int32, device=device)

    def metadata(self, bs: int) -> AttentionMetadata:
        """The metadata a bucket of ``bs`` rows is captured with (views of the buffers)."""
        return AttentionMetadata(
            slot_mapping=self.slot_mapping[:bs],
            block_tables=self.block_tables[:bs],
            seq_lens=self.seq_lens[:bs],
            query_start_loc=self.query_start_loc[: bs + 1],
            seq_lens_cpu=[self.max_model_len] * bs,  # upper bounds: never read on the decode path
            query_start_loc_cpu=list(range(bs + 1)),
            max_query_len=1,
            max_seq_len=self.max_model_len,
            num_decodes=bs,
            block_size=self.block_size,
        )

    def load(self, inputs: ModelInputs) -> int | None:
        """Copy a decode batch into the buffers and return its bucket, or None (longer rows,
        more rows than the largest bucket, a wider block table). Rows of up to ``MAX_FLAT_QUERY``
        tokens (verification) are loaded as one decode row per token (``load_flat``)."""
        md = inputs.metadata
        n = md.num_reqs
        if md.num_decodes != n:
            return self.load_flat(inputs)
        shape = self.shapes.select(n, n, md.block_tables.shape[1])
        if shape is None:
            return None
        bs = shape.num_reqs
        self._load_tokens(inputs, n, bs)
        self.block_tables[:n, : md.block_tables.shape[1]].copy_(md.block_tables, non_blocking=True)
        self.seq_lens[:n].copy_(md.seq_lens, non_blocking=True)
        self.seq_lens[n:bs].fill_(PAD_SEQ_LEN)
        return bs

    def _load_tokens(self, inputs: ModelInputs, n: int, bs: int) -> None:
        """The step's ``n`` tokens (ids, positions, KV slots) into the buffers; rows ``n .. bs``
        of the bucket write no KV."""
        self.input_ids[:n].copy_(inputs.input_ids, non_blocking=True)
        self.positions[:n].copy_(inputs.positions, non_blocking=True)
        self.slot_mapping[:n].copy_(inputs.metadata.slot_mapping, non_blocking=True)
        self.slot_mapping[n:bs].fill_(PAD_SLOT_ID)

    def load_flat(self, inputs: ModelInputs) -> int | None:
        """A step whose rows have ``1 .. MAX_FLAT_QUERY`` tokens as one decode row per token:
        the request's block table, ``seq_len`` = the token's position + 1 (its context, itself
        included). Plain Python on the few host values (a verification step of a few requests
        is in front of a launch the host cannot hide), the per-token lengths on the device."""
        md = inputs.metadata
        qsl = md.query_start_loc_cpu
        total = qsl[-1]
        if md.max_query_len > MAX_FLAT_QUERY or total != inputs.num_actual_tokens or total != inputs.input_ids.shape[0]:
            return None
        owner = [i for i in range(md.num_reqs) for _ in range(qsl[i + 1] - qsl[i])]
        if len(owner) != total or any(qsl[i + 1] <= qsl[i] for i in range(md.num_reqs)):
            return None
        shape = self.shapes.select(total, total, md.block_tables.shape[1])
        if shape is None:
            return None
        bs = shape.num_reqs
        self._load_tokens(inputs, total, bs)
        # through pinned memory: a pageable copy would make the host wait for the device
        index = to_device(np.asarray(owner, dtype=np.int64), md.block_tables.device)
        self.block_tables[:total, : md.block_tables.shape[1]].copy_(md.block_tables.index_select(0, index),
                                                                     non_blocking=True)
        torch.add(inputs.positions, 1, out=self.seq_lens[:total])
        self.seq_lens[total:bs].fill_(PAD_SEQ_LEN)
        return bs
