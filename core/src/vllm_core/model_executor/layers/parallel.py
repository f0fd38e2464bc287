"""Tensor-parallel layers (Megatron-LM's split, vLLM's names).

Each is a ``Linear`` / ``VocabEmbedding`` whose ``weight`` is this rank's shard, so code that
reads or wraps ``weight`` (the fused ops, a LoRA wrapper) sees the local shard and a plain
``[out, in]`` matrix. With one rank every layer holds the whole weight and runs exactly as its
base class (no collective, no extra op).

- ``QKVParallelLinear``: q, k and v split by heads; when there are fewer KV heads than ranks,
  each KV head is replicated on ``tp / num_kv_heads`` ranks. Output: local ``[q | k | v]``.
- ``MergedColumnParallelLinear``: gate and up, each split by rows. Output: local ``[gate | up]``.
- ``RowParallelLinear``: input features split; the partial products are all-reduced (the bias
  is added once, by tensor rank 0).
- ``VocabParallelEmbedding`` / ``ParallelLMHead``: the vocabulary padded to a multiple of the
  ranks and split by rows; the embedding all-reduces (each row lives on one rank), the head's
  logits are all-gathered and trimmed to the real vocabulary.

``weight_loader(param_name, weight, shard_id)`` copies a checkpoint tensor (or a lazily read one,
``model_loader.lazy``) into the local shard, reading only the rows or columns this rank owns.
"""

from __future__ import annotations

import torch

from vllm_core.distributed.communicator import Communicator, SingleRankCommunicator
from vllm_core.errors import ModelLoadError
from vllm_core.model_executor.layers.basic import Linear, VocabEmbedding
from vllm_core.model_executor.model_loader.lazy import Weight, materialize, narrow, shape_of
from vllm_core.platforms.ops import Ops


def divide(total: int, parts: int, what: str) -> int:
    """``total / parts``, or a ``ModelLoadError`` naming the value and the fix."""
    if total % parts:
        raise ModelLoadError(
            f"{what} ({total}) is not divisible by tensor_parallel_size={parts}; choose a "
            "tensor_parallel_size that divides it"
        )
    return total // parts


def _copy(dst: torch.Tensor, src: torch.Tensor, name: str) -> None:
    if dst.shape != src.shape:
        raise ModelLoadError(f"weight {name!r} shard has shape {tuple(src.shape)}, expected {tuple(dst.shape)}")
    dst.copy_(src)


class ColumnParallelLinear(Linear):
    """Output features split over the ranks; ``output_sizes`` are the fused parts' *global* sizes
    (one part for a plain column-parallel layer). Each part is split on its own, so the local
    output is the concatenation of each part's local slice."""

    def __init__(
        self, in_features: int, output_sizes: list[int], bias: bool = False, ops: Ops | None = None,
        tp: Communicator | None = None,
    ) -> None:
        self.tp = tp or SingleRankCommunicator()
        self.local_sizes = [divide(s, self.tp.world_size, "output size") for s in output_sizes]
        super().__init__(in_features, sum(self.local_sizes), bias, ops)

    def part_range(self, shard_id: int) -> tuple[int, int, int]:
        """(offset in the local output, rows to take, first row in the checkpoint tensor)."""
        offset = sum(self.local_sizes[:shard_id])
        size = self.local_sizes[shard_id]
        return offset, size, self.tp.rank_in_group * size

    def weight_loader(self, param_name: str, weight: Weight, shard_id: int | None) -> None:
        param = getattr(self, param_name).data
        offset, size, start = self.part_range(shard_id or 0)
        _copy(param.narrow(0, offset, size), narrow(weight, 0, start, size), param_name)


class MergedColumnParallelLinear(ColumnParallelLinear):
    """Fused gate/up (or any equal-rank parts), each split by rows."""


class QKVParallelLinear(ColumnParallelLinear):
    """Fused q, k, v split by heads. KV heads are split when ``tp <= num_kv_heads`` and
    replicated (``tp / num_kv_heads`` ranks hold each) when there are more ranks than KV heads."""

    def __init__(
        self, hidden_size: int, head_dim: int, num_heads: int, num_kv_heads: int, bias: bool = False,
        ops: Ops | None = None, tp: Communicator | None = None,
    ) -> None:
        tp = tp or SingleRankCommunicator()
        size = tp.world_size
        self.num_heads = divide(num_heads, size, "num_attention_heads")
        if size >= num_kv_heads:
            if size % num_kv_heads:
                raise ModelLoadError(
                    f"num_key_value_heads ({num_kv_heads}) must divide tensor_parallel_size={size} when "
                    "there are more ranks than KV heads (each KV head is replicated on tp / num_kv_heads "
                    "ranks); choose a tensor_parallel_size that is a multiple or a divisor of it"
                )
            self.num_kv_heads, self.kv_replicas = 1, size // num_kv_heads
        else:
            self.num_kv_heads, self.kv_replicas = divide(num_kv_heads, size, "num_key_value_heads"), 1
        self.head_dim = head_dim
        q, kv = self.num_heads * head_dim, self.num_kv_heads * head_dim
        self.tp = tp
        self.local_sizes = [q, kv, kv]
        Linear.__init__(self, hidden_size, q + 2 * kv, bias, ops)

    def part_range(self, shard_id: int) -> tuple[int, int, int]:
        offset = sum(self.local_sizes[:shard_id])
        size = self.local_sizes[shard_id]
        owner = self.tp.rank_in_group if shard_id == 0 else self.tp.rank_in_group // self.kv_replicas
        return offset, size, owner * size


class RowParallelLinear(Linear):
    """Input features split over the ranks; ``forward`` all-reduces the partial products. The
    bias (whole on every rank) is added by tensor rank 0 only, so the sum holds it once."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = False, ops: Ops | None = None,
        tp: Communicator | None = None,
    ) -> None:
        self.tp = tp or SingleRankCommunicator()
        super().__init__(divide(in_features, self.tp.world_size, "input size"), out_features, bias, ops)

    @property
    def local_bias(self) -> torch.Tensor | None:
        """The bias this rank adds (None on every rank but tensor rank 0)."""
        return self.bias if self.tp.rank_in_group == 0 else None

    def reduce(self, partial: torch.Tensor) -> torch.Tensor:
        """Sum of the ranks' partial outputs (identity with one rank)."""
        return partial if self.tp.world_size == 1 else self.tp.all_reduce(partial)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.ops.linear(x, self.weight, self.local_bias))

    def weight_loader(self, param_name: str, weight: Weight, shard_id: int | None) -> None:
        param = getattr(self, param_name).data
        if param_name == "bias":
            _copy(param, materialize(weight), param_name)
            return
        size = param.shape[1]
        _copy(param, narrow(weight, 1, self.tp.rank_in_group * size, size), param_name)


def padded_vocab(vocab_size: int, tp_size: int) -> int:
    """The vocabulary rounded up to a multiple of the ranks (each holds ``padded / tp`` rows)."""
    return -(-vocab_size // tp_size) * tp_size


class VocabParallelEmbedding(VocabEmbedding):
    """Rows of the (padded) vocabulary split over the ranks; a token's embedding comes from the
    rank that holds its row, through an all-reduce of the masked lookups."""

    def __init__(
        self, vocab_size: int, hidden_size: int, ops: Ops | None = None, tp: Communicator | None = None,
    ) -> None:
        self.tp = tp or SingleRankCommunicator()
        self.vocab_size = vocab_size
        self.rows = padded_vocab(vocab_size, self.tp.world_size) // self.tp.world_size
        self.start = self.tp.rank_in_group * self.rows
        super().__init__(self.rows, hidden_size, ops)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.tp.world_size == 1:
            return self.ops.embedding(input_ids, self.weight)
        local = input_ids - self.start
        mine = (local >= 0) & (local < self.rows)
        out = self.ops.embedding(torch.where(mine, local, 0), self.weight)
        out = out * mine.unsqueeze(-1).to(out.dtype)
        return self.tp.all_reduce(out)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Used as the output projection (an LM head, or a tied embedding): hidden [N, H] ->
        logits [N, vocab_size] on every rank."""
        return gather_logits(self.ops.linear(hidden, self.weight), self.tp, self.vocab_size)

    def weight_loader(self, param_name: str, weight: Weight, shard_id: int | None) -> None:
        param = self.weight.data
        total = shape_of(weight)[0]
        if total != self.vocab_size:
            raise ModelLoadError(f"vocabulary weight has {total} rows, expected vocab_size={self.vocab_size}")
        take = max(0, min(self.rows, total - self.start))
        if take < self.rows:
            param[take:].zero_()  # padding rows: never looked up, logits trimmed away
        if take:
            _copy(param[:take], narrow(weight, 0, self.start, take), param_name)


class ParallelLMHead(VocabParallelEmbedding):
    """The output projection, split as the embedding (``logits`` gathers the ranks' parts)."""


def gather_logits(local: torch.Tensor, tp: Communicator, vocab_size: int) -> torch.Tensor:
    """Local logits [N, padded / tp] -> [N, vocab_size] on every rank (every rank samples the
    same tokens from the same logits)."""
    if tp.world_size == 1:
        return local
    out = tp.all_gather(local, dim=-1)
    return out if out.shape[-1] == vocab_size else out[:, :vocab_size].contiguous()
