"""LoRA around the loaded model's projections, without touching the model's code.

``wrap_model`` replaces, after loading, the input embedding with a ``LoRAEmbedding`` and each
decoder layer's ``qkv_proj``, ``o_proj``, ``gate_up_proj`` and ``down_proj`` with a
``LoRALinear`` that runs the base projection and then adds every token's adapter delta
(``LoRAOps.add_lora``); the gated MLP, which the model runs as one fused op on the raw weights,
is replaced by ``LoRAMLP`` (the same gate/up, SiLU-and-mul, down, through the wrapped
projections). The adapters live in per-module device buffers with
``max_loras`` slots, written in place when an adapter is put in a slot, so captured graphs read
the current adapters; the step's token -> slot map is one persistent buffer (``LoRABatch``).

Tensor parallel (vLLM's split; each rank holds its shard of every slot, so no LoRA collective
is added):

- column-parallel projections (``qkv_proj``, ``gate_up_proj``: the local output is each fused
  part's local slice): A whole on every rank, each slice's B cut to the rows of that part this
  rank computes (``part_range`` of the base layer, which also knows KV heads replicated over
  ranks); the delta lands on the local output columns;
- row-parallel projections (``o_proj``, ``down_proj``: the input features are split and the
  partial products all-reduced): A cut to this rank's input columns, B whole; the delta of the
  local shrink is added to the local partial *before* the base layer's all-reduce, which sums
  it with the other ranks' (``sum_r (x_r A_r^T) B^T = (x A^T) B^T``), one collective as without LoRA;
- the input embedding: A and B whole on every rank, the delta added after the base lookup's
  all-reduce.

Pipeline parallel: each stage wraps the layers it holds (and the embedding on the first stage,
the head on the last) and loads only their part of an adapter; every stage keeps the same slot
map (the scheduler's step is the same on every stage).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from vllm_core.plugins.api import ConfigError
from vllm_lora.adapter import EMBEDDING, EMBEDDING_LAYER, LM_HEAD, LM_HEAD_LAYER, MODULE_SLICES
from vllm_lora.ops import LoRAOps


def padded_rank(max_lora_rank: int) -> int:
    """The rank the slots are sized for: a power of two >= 16 (the kernels' dot tiles)."""
    r = 16
    while r < max_lora_rank:
        r *= 2
    return r


@dataclass
class LoRABatch:
    """What every wrapped module of one engine shares: the step's token -> slot map and what the
    ops derive from it once per step."""

    ops: LoRAOps
    token_slots: torch.Tensor
    """[N] int64 on the device: each token row's adapter slot, -1 for none (padding included)."""
    scaling: torch.Tensor
    """[max_loras] float32 on the device: each slot's ``lora_alpha / r``."""
    dtype: torch.dtype
    tables: tuple[torch.Tensor, ...] | None = None
    """The ops' per-step tables over all N rows (``LoRAOps.token_tables``), updated in place."""
    active: bool = True
    """False while a step has no adapter row: the wrapped modules run the base model alone.
    After every forward it returns to ``capture_lora`` (a forward hook), which is what a graph
    capture then records."""
    has_rows: bool = False
    """Does this step have an adapter row? (set by ``prepare_step``, not reset by the forward:
    the logits are computed after it)"""
    capture_lora: bool = True
    """Do captured graphs hold the LoRA op? True where they can: CUDA graphs, and the cpu
    platform's recorded plans where it has a kernel for the op (they hold only its kernels).
    Where False, graphs are recorded for the base model and only steps without adapter rows
    replay them."""
    capture_embedding: bool = True
    """Do captured graphs hold the input embedding's delta (PyTorch ops)? False for the cpu
    platform's plans: they are recorded without it (nothing to add while no slot holds an
    embedding adapter) and steps with adapter rows run eagerly while one does."""

    def slots_for(self, num_tokens: int) -> torch.Tensor:
        if num_tokens > self.token_slots.shape[0]:
            grown = torch.full((num_tokens,), -1, dtype=torch.int64, device=self.token_slots.device)
            self.token_slots = grown
            self.refresh()
        return self.token_slots[:num_tokens]

    def refresh(self) -> None:
        """Recompute the ops' tables from ``token_slots`` and ``scaling`` (in place when sized)."""
        new = self.ops.token_tables(self.token_slots, self.scaling, self.dtype)
        if new is None or self.tables is None or any(a.shape != b.shape for a, b in zip(new, self.tables)):
            self.tables = new
            return
        for dst, src in zip(self.tables, new):
            dst.copy_(src)

    def load_step(self, rows: np.ndarray, to_device: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """The step's token -> slot map (``rows``: [T] int64 on the host) into ``token_slots``
        (rows past T: -1) and the ops' tables, from the host where the ops can (no device work
        beyond the copies), else recomputed on the device. ``to_device`` makes a host tensor a
        source that an asynchronous copy may read (pinned memory on accelerators)."""
        t = rows.shape[0]
        self.slots_for(t).copy_(to_device(torch.from_numpy(rows)), non_blocking=True)
        self.token_slots[t:].fill_(-1)
        host = self.ops.host_tables(rows, self.scaling.shape[0], self.token_slots.shape[0])
        if host is None or self.tables is None:
            self.refresh()
            return
        for dst, src in zip(self.tables, host):
            dst[..., : src.shape[-1]].copy_(to_device(torch.from_numpy(src)), non_blocking=True)

    def tables_for(self, num_tokens: int) -> tuple[torch.Tensor, ...] | None:
        return None if self.tables is None else self.ops.step_tables(self.tables, num_tokens)


class LoRALinear(nn.Module):
    """A projection with ``len(slice_sizes)`` output slices, each with its own A and B per slot."""

    def __init__(self, base: Any, slice_sizes: list[int], batch: LoRABatch, max_loras: int, rank: int,
                 dtype: torch.dtype) -> None:
        super().__init__()
        weight: torch.Tensor = base.weight
        out_features, in_features = weight.shape
        if sum(slice_sizes) != out_features:
            raise ConfigError(f"LoRA: slices {slice_sizes} do not cover the projection's {out_features} outputs")
        self.base = base
        self.batch = batch
        tp: Any = getattr(base, "tp", None)
        self.world_size = int(getattr(tp, "world_size", 1))
        self.row_parallel = self.world_size > 1 and hasattr(base, "reduce")
        """The base all-reduces partial products (input features split over the ranks)."""
        self.in_start = int(getattr(tp, "rank_in_group", 0)) * in_features if self.row_parallel else 0
        self.offsets = [sum(slice_sizes[:i]) for i in range(len(slice_sizes))]
        self.slice_sizes = tuple(slice_sizes)
        self.lora_a = torch.zeros(len(slice_sizes), max_loras, rank, in_features, dtype=dtype, device=weight.device)
        """[S, L, R, in]"""
        self.lora_b = torch.zeros(max_loras, rank, out_features, dtype=dtype, device=weight.device)
        """[L, R, out]: B transposed, the slices side by side in their output columns"""

    @property
    def weight(self) -> torch.Tensor:
        weight: torch.Tensor = self.base.weight
        return weight

    @property
    def bias(self) -> torch.Tensor | None:
        bias: torch.Tensor | None = self.base.bias
        return bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = self.batch
        if not batch.active:
            out: torch.Tensor = self.base.forward(x)
            return out
        base = self.base
        # row-parallel: the delta joins the local partial product before the all-reduce
        out = base.ops.linear(x, base.weight, base.local_bias) if self.row_parallel else base.forward(x)
        t = x.shape[0]
        slots = batch.slots_for(t)
        batch.ops.add_lora(out, x, self.lora_a, self.lora_b, self.slice_sizes, slots, batch.scaling, batch.tables_for(t))
        if self.row_parallel:
            reduced: torch.Tensor = base.reduce(out)
            return reduced
        return out

    def set_slot(self, slot: int, slice_index: int, a: torch.Tensor, b: torch.Tensor) -> None:
        """Put one slice's A [r, in] and B [out_s, r] (the whole adapter's; this rank's shard is
        taken here) in ``slot`` (ranks below the slot's are zero-padded)."""
        r = a.shape[0]
        in_local = self.lora_a.shape[-1]
        if a.shape[1] != in_local:  # row-parallel: this rank's input columns
            a = a[:, self.in_start : self.in_start + in_local]
        off, n = self.offsets[slice_index], self.slice_sizes[slice_index]
        if b.shape[0] != n:  # column-parallel: the rows of this part that this rank computes
            part_range: Any = getattr(self.base, "part_range", None)
            first = part_range(slice_index)[2] if part_range is not None else 0
            b = b[first : first + n]
        if a.shape[1] != in_local or b.shape[0] != n:
            raise ConfigError(f"LoRA: A {tuple(a.shape)} / B {tuple(b.shape)} do not fit this rank's "
                              f"projection (in {in_local}, slice {slice_index} of {n} outputs)")
        self.lora_a[slice_index, slot].zero_()
        self.lora_a[slice_index, slot, :r].copy_(a, non_blocking=True)
        self.lora_b[slot, :, off : off + n].zero_()
        self.lora_b[slot, :r, off : off + n].copy_(b.t(), non_blocking=True)

    def clear_slot(self, slot: int) -> None:
        self.lora_a[:, slot].zero_()
        self.lora_b[slot].zero_()


class LoRAEmbedding(nn.Module):
    """The input embedding with a LoRA per slot (PEFT's embedding LoRA): each token row adds
    ``scaling * A^T[token] @ B^T`` of its slot's adapter. A^T is kept as ``[L * vocab, R]`` so the
    row is one gather (index ``slot * vocab + token``); the expand is one matmul over the slots'
    concatenated B with every row masked to its own slot (no host sync, fixed shapes)."""

    def __init__(self, base: Any, batch: LoRABatch, max_loras: int, rank: int, dtype: torch.dtype) -> None:
        super().__init__()
        weight: torch.Tensor = base.weight
        hidden = weight.shape[1]
        self.vocab = int(getattr(base, "vocab_size", weight.shape[0]))
        """The whole vocabulary (a vocabulary-parallel embedding holds a shard of its rows)."""
        self.base = base
        self.batch = batch
        self.lora_a = torch.zeros(max_loras * self.vocab, rank, dtype=dtype, device=weight.device)
        """[L * vocab, R]: each slot's A transposed, row ``slot * vocab + token``"""
        self.lora_b = torch.zeros(max_loras, rank, hidden, dtype=dtype, device=weight.device)
        """[L, R, hidden]: B transposed"""
        self.slot_ids = torch.arange(max_loras, device=weight.device)
        self.loaded: set[int] = set()
        """The slots whose adapter has an embedding LoRA."""

    @property
    def weight(self) -> torch.Tensor:
        weight: torch.Tensor = self.base.weight
        return weight

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """A tied head reads the base embedding (PEFT's embedding LoRA leaves the head alone)."""
        logits: torch.Tensor = self.base.logits(hidden)
        return logits

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.base.forward(input_ids)
        batch = self.batch
        if not batch.active or not (self.loaded or batch.capture_embedding):
            return out
        t = input_ids.shape[0]
        slots = batch.slots_for(t)
        l_, r_, hidden = self.lora_b.shape
        rows = self.lora_a.index_select(0, slots.clamp(min=0) * self.vocab + input_ids)  # [T, R]
        own = (slots.unsqueeze(1) == self.slot_ids.unsqueeze(0)).to(rows.dtype)  # [T, L]
        per_slot = (own.unsqueeze(2) * rows.unsqueeze(1)).view(t, l_ * r_)
        delta = torch.matmul(per_slot, self.lora_b.view(l_ * r_, hidden))
        scale = torch.where(slots >= 0, batch.scaling.index_select(0, slots.clamp(min=0)), 0.0)
        return out + delta * scale.to(delta.dtype).unsqueeze(1)

    def set_slot(self, slot: int, slice_index: int, a: torch.Tensor, b: torch.Tensor) -> None:
        """Put A [r, vocab] and B [hidden, r] (PEFT's lora_embedding_A / _B) in ``slot``."""
        r = a.shape[0]
        rows = self.lora_a.view(-1, self.vocab, self.lora_a.shape[1])[slot]
        rows.zero_()
        rows[:, :r].copy_(a.t(), non_blocking=True)
        self.lora_b[slot].zero_()
        self.lora_b[slot, :r].copy_(b.t(), non_blocking=True)
        self.loaded.add(slot)

    def clear_slot(self, slot: int) -> None:
        self.lora_a.view(-1, self.vocab, self.lora_a.shape[1])[slot].zero_()
        self.lora_b[slot].zero_()
        self.loaded.discard(slot)


class LoRAHead(nn.Module):
    """LoRA on the output projection, around the model's ``compute_logits``: each logits row
    adds ``scaling * (h @ A^T) @ B^T`` of its request's slot. The runner tells which token rows
    the next call's hidden rows are (``RunnerExtension.prepare_logits``); a call it did not
    announce (a draft head reusing the target's head) gets the base logits. Under tensor
    parallel the base logits are gathered on every rank and A / B are whole on each, so every
    rank adds the same delta."""

    def __init__(self, compute_logits: Callable[[torch.Tensor], torch.Tensor], batch: LoRABatch, max_loras: int,
                 rank: int, hidden: int, vocab: int, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.compute_logits = compute_logits
        self.batch = batch
        self.vocab = vocab
        self.lora_a = torch.zeros(1, max_loras, rank, hidden, dtype=dtype, device=device)
        """[1, L, R, hidden]"""
        self.lora_b = torch.zeros(max_loras, rank, vocab, dtype=dtype, device=device)
        """[L, R, vocab]: B transposed"""
        self.token_rows: torch.Tensor | None = None
        """The step's token rows of the next call's hidden rows (``prepare_logits``), used once."""

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        out = self.compute_logits(hidden)
        rows, self.token_rows = self.token_rows, None
        batch = self.batch
        if rows is None or not batch.has_rows or rows.shape[0] != hidden.shape[0]:
            return out
        out = out if out.is_contiguous() else out.contiguous()
        slots = batch.token_slots.index_select(0, rows)
        batch.ops.add_lora(out, hidden.to(self.lora_a.dtype), self.lora_a, self.lora_b, (self.vocab,), slots,
                           batch.scaling)
        return out

    def set_slot(self, slot: int, slice_index: int, a: torch.Tensor, b: torch.Tensor) -> None:
        """Put A [r, hidden] and B [vocab, r] (PEFT's lm_head lora_A / lora_B) in ``slot``."""
        r = a.shape[0]
        self.lora_a[0, slot].zero_()
        self.lora_a[0, slot, :r].copy_(a, non_blocking=True)
        self.lora_b[slot].zero_()
        self.lora_b[slot, :r].copy_(b.t(), non_blocking=True)

    def clear_slot(self, slot: int) -> None:
        self.lora_a[:, slot].zero_()
        self.lora_b[slot].zero_()


class LoRAMLP(nn.Module):
    """The gated MLP through its (wrapped) projections: down(silu(gate) * up)."""

    def __init__(self, mlp: Any, gate_up: LoRALinear, down: LoRALinear) -> None:
        super().__init__()
        self.gate_up_proj = gate_up
        self.down_proj = down
        self.ops: Any = mlp.ops
        self._base_forward: Callable[[torch.Tensor], torch.Tensor] = mlp.forward
        """The model's own MLP (its fused op; the all-reduce under tensor parallel), not a submodule."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up, down = self.gate_up_proj, self.down_proj
        if not gate_up.batch.active:  # no adapter row: the model's MLP (the platform's fused op)
            return self._base_forward(x)
        out: torch.Tensor = down.forward(self.ops.silu_and_mul(gate_up.forward(x)))
        return out


ModuleKey = tuple[int, str]
"""(layer index, our module name: qkv_proj, o_proj, gate_up_proj, down_proj)"""


LoRAModule = LoRALinear | LoRAEmbedding | LoRAHead


def wrap_model(model: nn.Module, batch: LoRABatch, max_loras: int, rank: int, dtype: torch.dtype,
               ) -> dict[ModuleKey, LoRAModule]:
    """Wrap every decoder layer's projections, the input embedding and the output projection
    (``compute_logits``); returns them by (layer, module), the embedding as
    ``(EMBEDDING_LAYER, "embed_tokens")``, the head as ``(LM_HEAD_LAYER, "lm_head")``. A pipeline
    stage wraps what it holds: its layers, the embedding on the first stage, the head on the last."""
    layers: Any = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise ConfigError(
            f"LoRA: {type(model).__name__} has no decoder layers at model.layers; LoRA serves the Llama-family "
            "models (Llama, Mistral, Qwen2, Qwen3, SmolLM2)"
        )
    wrapped: dict[ModuleKey, LoRAModule] = {}
    inner: Any = getattr(model, "model", None)
    head: Any = getattr(model, "lm_head", None)
    head = head if head is not None else getattr(inner, EMBEDDING, None)  # tied: the embedding's rows
    compute_logits: Any = getattr(model, "compute_logits", None)
    last_stage = bool(getattr(getattr(inner, "pp", None), "is_last", True))  # the stage that computes logits
    if head is not None and compute_logits is not None and last_stage:
        weight: torch.Tensor = head.weight
        lora_head = LoRAHead(compute_logits, batch, max_loras, rank, weight.shape[1],
                             int(getattr(head, "vocab_size", weight.shape[0])), dtype, weight.device)
        wrapped[(LM_HEAD_LAYER, LM_HEAD)] = lora_head
        model.compute_logits = lora_head.logits  # type: ignore[assignment]  # an instance attribute: the runner calls it
    if getattr(inner, EMBEDDING, None) is not None:
        inner.embed_tokens = wrapped[(EMBEDDING_LAYER, EMBEDDING)] = LoRAEmbedding(
            inner.embed_tokens, batch, max_loras, rank, dtype)
    # a pipeline stage builds only its layers (``stage``); the others are placeholders
    for i in getattr(inner, "stage", range(len(layers))):
        layer = layers[i]
        attn: Any = getattr(layer, "self_attn", None)
        mlp: Any = getattr(layer, "mlp", None)
        needed = [(attn, "qkv_proj"), (attn, "o_proj"), (mlp, "gate_up_proj"), (mlp, "down_proj")]
        missing = [name for owner, name in needed if owner is None or not hasattr(owner, name)]
        if missing:
            raise ConfigError(f"LoRA: layer {i} of {type(model).__name__} has no {', '.join(missing)}")
        q, kv = attn.q_size, attn.kv_size
        inter = mlp.down_proj.weight.shape[1]
        hidden = mlp.down_proj.weight.shape[0]

        def make(base: Any, sizes: list[int]) -> LoRALinear:
            return LoRALinear(base, sizes, batch, max_loras, rank, dtype)

        attn.qkv_proj = wrapped[(i, "qkv_proj")] = make(attn.qkv_proj, [q, kv, kv])
        attn.o_proj = wrapped[(i, "o_proj")] = make(attn.o_proj, [hidden])
        gate_up = wrapped[(i, "gate_up_proj")] = make(mlp.gate_up_proj, [inter, inter])
        down = wrapped[(i, "down_proj")] = make(mlp.down_proj, [hidden])
        layer.mlp = LoRAMLP(mlp, gate_up, down)

    def reactivate(module: nn.Module, args: Any, output: Any) -> None:
        batch.active = batch.capture_lora

    model.register_forward_hook(reactivate)
    return wrapped


def target_of(layer: int, peft_module: str) -> tuple[ModuleKey, int]:
    """Where a PEFT module's A/B go: ((layer, our module), slice index)."""
    if peft_module == EMBEDDING:
        return (EMBEDDING_LAYER, EMBEDDING), 0
    if peft_module == LM_HEAD:
        return (LM_HEAD_LAYER, LM_HEAD), 0
    module, slice_index = MODULE_SLICES[peft_module]
    return (layer, module), slice_index
