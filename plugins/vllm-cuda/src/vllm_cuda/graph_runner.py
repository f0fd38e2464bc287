"""CUDA graphs for decode batches.

Decode steps are many, small and launch-bound; a captured graph replays the whole forward with
one launch. Graphs are captured for batch-size buckets, largest first, sharing one memory pool.
Inputs live in persistent buffers that every graph reads; a batch of ``n`` requests replays the
smallest bucket ``>= n`` with the padded rows made harmless: ``slot_mapping = -1`` (the KV write
skips them) and ``seq_len = 1`` (their attention reads one valid slot). Prefill and mixed
batches run eagerly.
"""

from __future__ import annotations

import torch
from torch import nn

from vllm_core.attention.metadata import AttentionMetadata
from vllm_core.worker.graph_runner import GraphRunner
from vllm_core.worker.input_batch import ModelInputs


def batch_buckets(max_num_seqs: int) -> list[int]:
    """1, 2, 4, 8, then every 16 up to ``max_num_seqs`` (which is always included)."""
    sizes = [s for s in (1, 2, 4, 8) if s <= max_num_seqs]
    sizes += list(range(16, max_num_seqs + 1, 16))
    if max_num_seqs not in sizes:
        sizes.append(max_num_seqs)
    return sorted(set(sizes))


class CUDAGraphRunner(GraphRunner):
    def __init__(self, model: nn.Module, device: torch.device, max_num_seqs: int, max_model_len: int, block_size: int) -> None:
        self.model = model
        self.device = device
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.max_blocks = -(-max_model_len // block_size)
        self.sizes = batch_buckets(max_num_seqs)
        n = self.sizes[-1]
        self.input_ids = torch.zeros(n, dtype=torch.int64, device=device)
        self.positions = torch.zeros(n, dtype=torch.int64, device=device)
        self.slot_mapping = torch.full((n,), -1, dtype=torch.int64, device=device)
        self.block_tables = torch.zeros(n, self.max_blocks, dtype=torch.int32, device=device)
        self.seq_lens = torch.ones(n, dtype=torch.int32, device=device)
        self.query_start_loc = torch.arange(n + 1, dtype=torch.int32, device=device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}

    @property
    def captured_sizes(self) -> list[int]:
        return sorted(self.graphs)

    def _metadata(self, bs: int) -> AttentionMetadata:
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

    @torch.inference_mode()
    def capture(self) -> None:
        pool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        for bs in reversed(self.sizes):
            md = self._metadata(bs)
            with torch.cuda.stream(stream):
                for _ in range(2):  # compile Triton kernels and settle the allocator first
                    self.model(self.input_ids[:bs], self.positions[:bs], md)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool, stream=stream):
                out = self.model(self.input_ids[:bs], self.positions[:bs], md)
            self.graphs[bs] = graph
            self.outputs[bs] = out
        torch.cuda.synchronize(self.device)

    def try_run(self, inputs: ModelInputs) -> torch.Tensor | None:
        md = inputs.metadata
        n = md.num_reqs
        if md.num_decodes != n or n > self.sizes[-1] or md.block_tables.shape[1] > self.max_blocks:
            return None
        bs = next(s for s in self.sizes if s >= n)
        self.input_ids[:n].copy_(inputs.input_ids, non_blocking=True)
        self.positions[:n].copy_(inputs.positions, non_blocking=True)
        self.slot_mapping[:n].copy_(md.slot_mapping, non_blocking=True)
        self.slot_mapping[n:bs].fill_(-1)
        self.block_tables[:n, : md.block_tables.shape[1]].copy_(md.block_tables, non_blocking=True)
        self.seq_lens[:n].copy_(md.seq_lens, non_blocking=True)
        self.seq_lens[n:bs].fill_(1)
        self.graphs[bs].replay()
        return self.outputs[bs][:n]
