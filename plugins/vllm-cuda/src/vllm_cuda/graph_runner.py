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

from vllm_core.plugins.api import DecodeBuffers, GraphRunner, ModelInputs, batch_buckets

__all__ = ["CUDAGraphRunner", "batch_buckets"]


class CUDAGraphRunner(GraphRunner):
    def __init__(self, model: nn.Module, device: torch.device, max_num_seqs: int, max_model_len: int, block_size: int) -> None:
        self.model = model
        self.device = device
        self.buffers = DecodeBuffers(batch_buckets(max_num_seqs), max_model_len, block_size, device)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}

    @property
    def captured_sizes(self) -> list[int]:
        return sorted(self.graphs)

    @torch.inference_mode()
    def capture(self) -> None:
        buf = self.buffers
        pool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        for bs in reversed(buf.sizes):
            md = buf.metadata(bs)
            with torch.cuda.stream(stream):
                for _ in range(2):  # compile Triton kernels and settle the allocator first
                    self.model(buf.input_ids[:bs], buf.positions[:bs], md)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool, stream=stream):
                out = self.model(buf.input_ids[:bs], buf.positions[:bs], md)
            self.graphs[bs] = graph
            self.outputs[bs] = out
        torch.cuda.synchronize(self.device)

    def try_run(self, inputs: ModelInputs) -> torch.Tensor | None:
        bs = self.buffers.load(inputs)
        if bs is None:
            return None
        self.graphs[bs].replay()
        return self.outputs[bs][: inputs.num_actual_tokens]  # one row per token (verification rows too)
