"""The Llama family decoder: Llama 2/3 (incl. llama3 rope), SmolLM2, TinyLlama, Mistral, Qwen2
(qkv bias), Qwen3 (q/k RMSNorm). One implementation; subclasses set the differences.

q, k and v are one fused projection and gate/up another; ``load_weights`` maps the separate
Hugging Face tensors into their shards.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from vllm_core.attention.layer import Attention
from vllm_core.attention.metadata import AttentionMetadata
from vllm_core.errors import ModelLoadError
from vllm_core.model_executor.layers.basic import Linear, RMSNorm, VocabEmbedding
from vllm_core.model_executor.layers.rotary import RotaryEmbedding
from vllm_core.model_executor.models.interface import ModelContext


def head_dim_of(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


# Submodules are called through ``.forward``: these models register no hooks, and
# ``nn.Module.__call__``'s hook checks cost about 2 us a call, 12 calls a layer. Measured on the
# 2-core CPU: W3 (single-stream decode, SmolLM2 bf16) 14.8 -> 13.9 ms per token.


class DecoderAttention(nn.Module):
    def __init__(self, config: Any, layer_idx: int, ctx: ModelContext, qkv_bias: bool, qk_norm: bool) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = head_dim_of(config)
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.qkv_proj = Linear(config.hidden_size, self.q_size + 2 * self.kv_size, bias=qkv_bias, ops=ctx.ops)
        self.o_proj = Linear(self.q_size, config.hidden_size, bias=getattr(config, "attention_bias", False), ops=ctx.ops)
        eps = config.rms_norm_eps
        self.q_norm = RMSNorm(self.head_dim, eps, ctx.ops) if qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, eps, ctx.ops) if qk_norm else None
        self.rotary_emb = RotaryEmbedding(config, self.head_dim, ctx.max_positions, ctx.ops)
        self.attn = Attention(
            self.num_heads, self.head_dim, self.num_kv_heads, self.head_dim**-0.5,
            ctx.attention_backend, ctx.ops, layer_idx,
        )

    def forward(self, positions: torch.Tensor, hidden: torch.Tensor, metadata: AttentionMetadata) -> torch.Tensor:
        qkv = self.qkv_proj.forward(hidden)
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        t = hidden.shape[0]
        q = q.reshape(t, self.num_heads, self.head_dim)
        k = k.reshape(t, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.rotary_emb.with_qk_norm(positions, q, k, self.q_norm, self.k_norm)
        else:
            q, k = self.rotary_emb.forward(positions, q, k)
        # v stays a strided view of qkv: backends write it to the cache row by row (a copy here
        # would also be the one tensor op of a decode step that a recorded CPU plan cannot hold)
        out = self.attn.forward(q.reshape(t, -1), k.reshape(t, -1), v, metadata)
        return self.o_proj.forward(out)


class DecoderMLP(nn.Module):
    def __init__(self, config: Any, ctx: ModelContext) -> None:
        super().__init__()
        bias = getattr(config, "mlp_bias", False)
        act = getattr(config, "hidden_act", "silu")
        if act != "silu":
            raise ModelLoadError(f"hidden_act {act!r} is not supported; supported: silu")
        self.gate_up_proj = Linear(config.hidden_size, 2 * config.intermediate_size, bias=bias, ops=ctx.ops)
        self.down_proj = Linear(config.intermediate_size, config.hidden_size, bias=bias, ops=ctx.ops)
        self.ops = ctx.ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up, down = self.gate_up_proj, self.down_proj
        return self.ops.silu_mlp(x, gate_up.weight, down.weight, gate_up.bias, down.bias)


class DecoderLayer(nn.Module):
    def __init__(self, config: Any, layer_idx: int, ctx: ModelContext, qkv_bias: bool, qk_norm: bool) -> None:
        super().__init__()
        self.self_attn = DecoderAttention(config, layer_idx, ctx, qkv_bias, qk_norm)
        self.mlp = DecoderMLP(config, ctx)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, ctx.ops)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, ctx.ops)

    def forward(
        self,
        positions: torch.Tensor,
        hidden: torch.Tensor,
        residual: torch.Tensor | None,
        metadata: AttentionMetadata,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:
            residual = hidden
            hidden = self.input_layernorm.forward(hidden)
        else:
            hidden, residual = self.input_layernorm.forward(hidden, residual)
        hidden = self.self_attn.forward(positions, hidden, metadata)
        hidden, residual = self.post_attention_layernorm.forward(hidden, residual)
        return self.mlp.forward(hidden), residual


class DecoderModel(nn.Module):
    def __init__(self, config: Any, ctx: ModelContext, qkv_bias: bool, qk_norm: bool) -> None:
        super().__init__()
        self.embed_tokens = VocabEmbedding(config.vocab_size, config.hidden_size, ctx.ops)
        self.layers = nn.ModuleList(
            DecoderLayer(config, i, ctx, qkv_bias, qk_norm) for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, ctx.ops)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, metadata: AttentionMetadata) -> torch.Tensor:
        hidden = self.embed_tokens.forward(input_ids)
        residual = None
        for layer in self.layers:
            hidden, residual = layer.forward(positions, hidden, residual, metadata)
        hidden, _ = self.norm.forward(hidden, residual)
        return hidden


class LlamaForCausalLM(nn.Module):
    """Llama-family causal LM. Subclasses switch ``qkv_bias`` / ``qk_norm``."""

    qk_norm: ClassVar[bool] = False

    @classmethod
    def qkv_bias(cls, config: Any) -> bool:
        return bool(getattr(config, "attention_bias", False))

    # HF name fragment -> (our parameter fragment, shard index)
    stacked_params: ClassVar[list[tuple[str, str, int]]] = [
        (".qkv_proj", ".q_proj", 0),
        (".qkv_proj", ".k_proj", 1),
        (".qkv_proj", ".v_proj", 2),
        (".gate_up_proj", ".gate_proj", 0),
        (".gate_up_proj", ".up_proj", 1),
    ]

    def __init__(self, config: Any, ctx: ModelContext) -> None:
        super().__init__()
        self.config = config
        self.model = DecoderModel(config, ctx, self.qkv_bias(config), self.qk_norm)
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", False))
        self.lm_head = None if self.tie_word_embeddings else Linear(config.hidden_size, config.vocab_size, ops=ctx.ops)
        self.ops = ctx.ops

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, metadata: AttentionMetadata) -> torch.Tensor:
        return self.model(input_ids, positions, metadata)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        weight = self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight
        return self.ops.linear(hidden, weight)

    def attention_layers(self) -> list[Attention]:
        return [layer.self_attn.attn for layer in self._layers()]

    def _layers(self) -> list[DecoderLayer]:
        return list(self.model.layers)  # type: ignore[arg-type]

    def _shard_offsets(self, fused: str) -> list[tuple[int, int]]:
        attn = self._layers()[0].self_attn
        if fused == ".qkv_proj":
            sizes: list[int] = [attn.q_size, attn.kv_size, attn.kv_size]
        else:
            inter = int(self.config.intermediate_size)
            sizes = [inter, inter]
        offsets, start = [], 0
        for size in sizes:
            offsets.append((start, size))
            start += size
        return offsets

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for name, tensor in weights:
            if "rotary_emb.inv_freq" in name:
                continue
            if name == "lm_head.weight" and self.tie_word_embeddings:
                continue
            target, shard = name, None
            for fused, part, idx in self.stacked_params:
                if part in name:
                    target, shard = name.replace(part, fused), idx
                    break
            param = params.get(target)
            if param is None:
                raise ModelLoadError(
                    f"weight {name!r} has no matching parameter in {type(self).__name__}; "
                    "the checkpoint does not match the architecture in its config"
                )
            data = param.data
            if shard is not None:
                fused = ".qkv_proj" if ".qkv_proj" in target else ".gate_up_proj"
                start, size = self._shard_offsets(fused)[shard]
                data = data.narrow(0, start, size)
            if data.shape != tensor.shape:
                raise ModelLoadError(
                    f"weight {name!r} has shape {tuple(tensor.shape)}, expected {tuple(data.shape)}"
                )
            data.copy_(tensor)
            loaded.add(target if shard is None else f"{target}#{shard}")
        return loaded

    def expected_weights(self) -> set[str]:
        """Names ``load_weights`` must have seen for the model to be complete."""
        out: set[str] = set()
        for name, _ in self.named_parameters():
            if ".qkv_proj." in name:
                out.update(f"{name}#{i}" for i in range(3))
            elif ".gate_up_proj." in name:
                out.update(f"{name}#{i}" for i in range(2))
            else:
                out.add(name)
        return out


class MistralForCausalLM(LlamaForCausalLM):
    """Mistral: the Llama decoder (sliding window bounded through max_model_len)."""


class Qwen2ForCausalLM(LlamaForCausalLM):
    """Qwen2 / Qwen2.5: bias on q, k and v."""

    @classmethod
    def qkv_bias(cls, config: Any) -> bool:
        return True


class Qwen3ForCausalLM(LlamaForCausalLM):
    """Qwen3: RMSNorm on each head of q and k before rotary."""

    qk_norm: ClassVar[bool] = True
