"""The Llama family decoder: Llama 2/3 (incl. llama3 rope), SmolLM2, TinyLlama, Mistral, Qwen2
(qkv bias), Qwen3 (q/k RMSNorm). One implementation; subclasses set the differences.

q, k and v are one fused projection and gate/up another; ``load_weights`` maps the separate
Hugging Face tensors into their shards.

Tensor parallel (``ModelContext.parallel.tp``): the projections are the parallel layers of
``model_executor.layers.parallel`` (heads, gate/up rows and the vocabulary split over the ranks;
o_proj and down_proj all-reduce). Pipeline parallel (``.pp``): a stage builds only its layers
(``distributed.pipeline.stage_layers``; the others are empty placeholders, so parameter names stay
the checkpoint's), receives the previous stage's hidden states and sends its own on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from vllm_core.attention.layer import Attention
from vllm_core.attention.metadata import AttentionMetadata
from vllm_core.distributed.pipeline import recv_intermediate, send_intermediate, stage_layers
from vllm_core.errors import ConfigError, EngineError, ModelLoadError
from vllm_core.model_executor.layers.basic import RMSNorm
from vllm_core.model_executor.layers.parallel import (
    MergedColumnParallelLinear,
    ParallelLMHead,
    QKVParallelLinear,
    RowParallelLinear,
    VocabParallelEmbedding,
)
from vllm_core.model_executor.layers.rotary import RotaryEmbedding
from vllm_core.model_executor.model_loader.lazy import Weight
from vllm_core.model_executor.models.aux_hidden import AuxHiddenStates
from vllm_core.model_executor.models.interface import ModelContext
from vllm_core.model_executor.models.weight_utils import load_parameter, stacked_target


def head_dim_of(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


# Submodules are called through ``.forward``: these models register no hooks, and
# ``nn.Module.__call__``'s hook checks cost about 2 us a call, 12 calls a layer. Measured on the
# 2-core CPU: W3 (single-stream decode, SmolLM2 bf16) 14.8 -> 13.9 ms per token.


class DecoderAttention(nn.Module):
    def __init__(self, config: Any, layer_idx: int, ctx: ModelContext, qkv_bias: bool, qk_norm: bool) -> None:
        super().__init__()
        tp = ctx.parallel.tp
        total_heads = config.num_attention_heads
        total_kv_heads = getattr(config, "num_key_value_heads", None) or total_heads
        self.head_dim = head_dim_of(config)
        self.qkv_proj = QKVParallelLinear(
            config.hidden_size, self.head_dim, total_heads, total_kv_heads, bias=qkv_bias, ops=ctx.ops, tp=tp,
        )
        # this rank's heads (all of them with one rank)
        self.num_heads, self.num_kv_heads = self.qkv_proj.num_heads, self.qkv_proj.num_kv_heads
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        self.o_proj = RowParallelLinear(
            total_heads * self.head_dim, config.hidden_size, bias=getattr(config, "attention_bias", False),
            ops=ctx.ops, tp=tp,
        )
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
        inter, tp = config.intermediate_size, ctx.parallel.tp
        self.gate_up_proj = MergedColumnParallelLinear(config.hidden_size, [inter, inter], bias=bias, ops=ctx.ops, tp=tp)
        self.down_proj = RowParallelLinear(inter, config.hidden_size, bias=bias, ops=ctx.ops, tp=tp)
        self.ops = ctx.ops
        self.tp = tp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # reads only the projections' weight and bias (a wrapper around them keeps working)
        gate_up, down = self.gate_up_proj, self.down_proj
        if self.tp.world_size == 1:
            return self.ops.silu_mlp(x, gate_up.weight, down.weight, gate_up.bias, down.bias)
        # the fused op on this rank's shards, the down bias added once (tensor rank 0), then summed
        bias = down.bias if self.tp.rank_in_group == 0 else None
        return self.tp.all_reduce(self.ops.silu_mlp(x, gate_up.weight, down.weight, gate_up.bias, bias))


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
        self.pp = ctx.parallel.pp
        self.hidden_size = config.hidden_size
        self.stage = stage_layers(config.num_hidden_layers, self.pp.rank_in_group, self.pp.world_size)
        self.embed_tokens = (
            VocabParallelEmbedding(config.vocab_size, config.hidden_size, ctx.ops, ctx.parallel.tp)
            if self.pp.is_first else None
        )
        self.layers = nn.ModuleList(
            DecoderLayer(config, i, ctx, qkv_bias, qk_norm) if i in self.stage else nn.Identity()
            for i in range(config.num_hidden_layers)
        )
        self.stage_layers: list[DecoderLayer] = [self.layers[i] for i in self.stage]  # type: ignore[misc]
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, ctx.ops) if self.pp.is_last else None
        self.aux_hidden_states: AuxHiddenStates | None = None
        """Layers whose input the forward keeps (``set_aux_hidden_state_layers``); None: none."""

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, metadata: AttentionMetadata,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        residual: torch.Tensor | None
        if inputs_embeds is not None:
            hidden, residual = inputs_embeds, None
        elif self.embed_tokens is not None:
            hidden, residual = self.embed_tokens.forward(input_ids), None
        else:
            hidden, residual = recv_intermediate(
                self.pp, input_ids.shape[0], self.hidden_size, self.dtype_of(), input_ids.device
            )
        taps = self.aux_hidden_states
        if taps is None:
            for layer in self.stage_layers:
                hidden, residual = layer.forward(positions, hidden, residual, metadata)
        else:
            for i, layer in zip(self.stage, self.stage_layers):
                if i in taps.column:
                    taps.record(i, hidden, residual)
                hidden, residual = layer.forward(positions, hidden, residual, metadata)
        if self.norm is None:
            assert residual is not None
            send_intermediate(self.pp, hidden, residual)
            return None
        hidden, _ = self.norm.forward(hidden, residual)
        return hidden

    def dtype_of(self) -> torch.dtype:
        """The activations' dtype (the weights')."""
        return self.stage_layers[0].input_layernorm.weight.dtype


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
        pp = ctx.parallel.pp
        # Tied: the last stage's head reads the embedding (its own copy when the first stage is
        # another process). With one stage the head is the embedding itself.
        self.lm_head: ParallelLMHead | None = None
        if pp.is_last and not (self.tie_word_embeddings and pp.is_first):
            self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size, ctx.ops, ctx.parallel.tp)
        self.ops = ctx.ops

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, metadata: AttentionMetadata,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        """``inputs_embeds`` [T, hidden]: used instead of embedding ``input_ids`` (a
        vision-language model merges image embeddings into it)."""
        return self.model(input_ids, positions, metadata, inputs_embeds)

    def set_aux_hidden_state_layers(self, layers: Sequence[int], max_tokens: int) -> AuxHiddenStates:
        """Keep the input of these decoder layers on every forward (for steps of up to
        ``max_tokens`` tokens); read them with ``aux_hidden_states(T)``."""
        if self.model.pp.world_size > 1:
            raise ConfigError(
                "auxiliary hidden states (EAGLE-3) need the whole model in one pipeline stage; "
                "use pipeline_parallel_size=1"
            )
        weight = self.model.stage_layers[0].input_layernorm.weight
        taps = AuxHiddenStates(
            layers, len(self.model.layers), self.config.hidden_size, max_tokens, weight.dtype, weight.device
        )
        self.model.aux_hidden_states = taps
        return taps

    def aux_hidden_states(self, num_tokens: int) -> torch.Tensor:
        """[num_tokens, len(layers) * hidden]: the kept layers' inputs of the last forward."""
        taps = self.model.aux_hidden_states
        if taps is None:
            raise EngineError("no auxiliary hidden-state layers were set (set_aux_hidden_state_layers)")
        return taps.read(num_tokens)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """[T] -> [T, hidden]: the token embeddings (a vision-language model merges image
        embeddings into them; a draft head that shares the target's vocabulary reads them)."""
        if self.model.embed_tokens is None:
            raise ConfigError("this pipeline stage holds no token embedding; use pipeline_parallel_size=1")
        return self.model.embed_tokens.forward(input_ids)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        head = self.lm_head if self.lm_head is not None else self.model.embed_tokens
        assert head is not None
        return head.logits(hidden)

    def attention_layers(self) -> list[Attention]:
        return [layer.self_attn.attn for layer in self._layers()]

    def _layers(self) -> list[DecoderLayer]:
        return self.model.stage_layers

    def _on_other_stage(self, name: str) -> bool:
        """A checkpoint tensor another pipeline stage holds (this one skips it unread)."""
        if name.startswith("model.layers."):
            return int(name.split(".")[2]) not in self.model.stage
        if name.startswith("model.embed_tokens."):
            return self.model.embed_tokens is None and not (self.tie_word_embeddings and self.lm_head is not None)
        if name.startswith("model.norm."):
            return self.model.norm is None
        if name.startswith("lm_head."):
            return self.lm_head is None
        return False

    def load_weights(self, weights: Iterable[tuple[str, Weight]]) -> set[str]:
        params = dict(self.named_parameters())
        modules = dict(self.named_modules())
        loaded: set[str] = set()
        for name, tensor in weights:
            if "rotary_emb.inv_freq" in name:
                continue
            if name == "lm_head.weight" and self.tie_word_embeddings:
                continue
            if self._on_other_stage(name):
                continue
            target, shard = stacked_target(name, self.stacked_params)
            targets = [target]
            if target == "model.embed_tokens.weight" and self.tie_word_embeddings and self.lm_head is not None:
                # a tied head on a stage of its own reads the embedding
                targets = ["lm_head.weight"] + ([target] if self.model.embed_tokens is not None else [])
            for t in targets:
                if t not in params:
                    raise ModelLoadError(
                        f"weight {name!r} has no matching parameter in {type(self).__name__}; "
                        "the checkpoint does not match the architecture in its config"
                    )
                load_parameter(modules, params, t, name, tensor, shard)
                loaded.add(t if shard is None else f"{t}#{shard}")
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
