"""EAGLE draft heads for Llama-family targets, in the layout of their Hugging Face checkpoints.

A head is not a causal LM of its own: it reads the target's hidden states. Row ``i`` of a head's
input is (the token at position ``i + 1``, a hidden state for position ``i``) at position ``i``;
its output predicts the token at ``i + 2``. ``forward`` returns two tensors: the rows logits are
computed from, and the hidden state that feeds the head's next draft step.

``EagleLlamaHead`` (EAGLE-1, ``{"method": "eagle"}``; e.g. ``yuhuili/EAGLE-LLaMA3-Instruct-8B``):
``fc`` [H, 2H] maps ``concat(embed(token), target_hidden)`` to H, then ``layers.*`` (Llama
decoder layers; layer 0 has no input norm), output ``hidden + residual`` with no final norm; the
logits come from the target's LM head. The input hidden state is the target's output (after its
final norm).

``Eagle3LlamaHead`` (EAGLE-3, ``{"method": "eagle3"}``): the target's states entering three
decoder layers (low, middle, high: ``eagle_aux_hidden_state_layer_ids`` of the config, else
``(2, L // 2, L - 3)``) are concatenated and projected by ``fc`` [H, 3 * H_target]; one decoder
layer (``midlayer.*``) whose attention reads ``concat(input_layernorm(embed(token)),
hidden_norm(hidden))`` [2H]; ``norm`` and an LM head of its own over a draft vocabulary of
``draft_vocab_size`` tokens, mapped to the target's ids by ``d2t`` (``target = draft + d2t[draft]``).

Both share the target's token embedding when the checkpoint has none.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from vllm_core.attention.metadata import AttentionMetadata
from vllm_core.errors import ConfigError, ModelLoadError
from vllm_core.model_executor.layers.basic import Linear, RMSNorm
from vllm_core.model_executor.layers.parallel import ParallelLMHead, QKVParallelLinear, VocabParallelEmbedding
from vllm_core.model_executor.models.interface import ModelContext
from vllm_core.model_executor.models.llama import DecoderLayer, LlamaForCausalLM, head_dim_of
from vllm_core.model_executor.models.weight_utils import load_parameter, stacked_target

Embed = Callable[[torch.Tensor], torch.Tensor]


def read_head_checkpoint(path: str) -> tuple[Any, dict[str, torch.Tensor]]:
    """(config, tensors) of a head directory: ``config.json`` and ``*.safetensors``."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, LlamaConfig

    if not os.path.isdir(path) or not os.path.exists(os.path.join(path, "config.json")):
        raise ConfigError(
            f"EAGLE head {path!r} not found: give the directory of the head's Hugging Face checkpoint "
            "(config.json and *.safetensors); nothing is downloaded"
        )
    try:
        config = AutoConfig.from_pretrained(path)
    except (ValueError, KeyError):  # heads whose config names no model_type
        config = LlamaConfig.from_pretrained(path)
    files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
    if not files:
        raise ConfigError(f"EAGLE head {path!r} has no *.safetensors weights; convert the checkpoint to safetensors")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        tensors.update(load_file(os.path.join(path, f)))
    return config, tensors


_STACKED = [(".qkv_proj", ".q_proj", 0), (".qkv_proj", ".k_proj", 1), (".qkv_proj", ".v_proj", 2),
            (".gate_up_proj", ".gate_proj", 0), (".gate_up_proj", ".up_proj", 1)]


def load_named(module: nn.Module, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Copy checkpoint tensors (our names, q/k/v and gate/up separate) into ``module``; every
    parameter must be covered."""
    params = dict(module.named_parameters())
    modules = dict(module.named_modules())
    loaded: set[str] = set()
    for name, tensor in weights:
        target, shard = stacked_target(name, _STACKED)
        if target not in params:
            raise ModelLoadError(
                f"weight {name!r} of the EAGLE head has no matching parameter in {type(module).__name__}; "
                "the checkpoint does not match the method (eagle: fc, layers.*; eagle3: midlayer.*, fc, norm, lm_head)"
            )
        load_parameter(modules, params, target, name, tensor, shard)
        loaded.add(target if shard is None else f"{target}#{shard}")
    expected = set()
    for name, _ in module.named_parameters():
        parts = 3 if ".qkv_proj." in name else 2 if ".gate_up_proj." in name else 0
        expected.update({f"{name}#{i}" for i in range(parts)} if parts else {name})
    missing = sorted(expected - loaded)
    if missing:
        raise ModelLoadError(f"the EAGLE head checkpoint lacks {', '.join(missing[:6])}; it is incomplete")


class EagleHead(nn.Module):
    """What both heads share: the token embedding (own or the target's) and the vocabulary map."""

    method: ClassVar[str]

    def __init__(self, config: Any, target: LlamaForCausalLM, own_embedding: bool, ctx: ModelContext) -> None:
        super().__init__()
        self.config = config
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size, ctx.ops) if own_embedding else None
        self._target_embed: Embed = target.embed_input_ids

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens.forward(input_ids) if self.embed_tokens is not None else self._target_embed(input_ids)

    def combine(self, target_hidden: torch.Tensor) -> torch.Tensor:
        """The target's states as the head's hidden input (EAGLE-3 projects them)."""
        return target_hidden

    def draft_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """Greedy draft ids in the target's vocabulary from the logits rows ``hidden`` [N, H]."""
        raise NotImplementedError

    def attention_layers(self) -> list[Any]:
        raise NotImplementedError


class EagleLlamaHead(EagleHead):
    """EAGLE-1 head (see the module docstring)."""

    method = "eagle"

    def __init__(self, config: Any, target: LlamaForCausalLM, own_embedding: bool, ctx: ModelContext,
                 fc_bias: bool, first_layer_id: int) -> None:
        super().__init__(config, target, own_embedding, ctx)
        h = config.hidden_size
        self.fc = Linear(2 * h, h, bias=fc_bias, ops=ctx.ops)
        bias = bool(getattr(config, "attention_bias", False))
        self.layers = nn.ModuleList(
            DecoderLayer(config, first_layer_id + i, ctx, bias, False) for i in range(config.num_hidden_layers)
        )
        self.decoder_layers: list[DecoderLayer] = list(self.layers)  # type: ignore[arg-type]
        del self.decoder_layers[0].input_layernorm  # EAGLE-1's first layer reads fc's output as is
        self._target_logits = target.compute_logits

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, hidden: torch.Tensor, metadata: AttentionMetadata
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.fc.forward(torch.cat([self.embed(input_ids), hidden], dim=-1))
        first = self.decoder_layers[0]
        residual = x
        x = first.self_attn.forward(positions, x, metadata)
        x, residual = first.post_attention_layernorm.forward(x, residual)
        x = first.mlp.forward(x)
        for layer in self.decoder_layers[1:]:
            x, residual = layer.forward(positions, x, residual, metadata)
        out = x + residual
        return out, out

    def draft_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._target_logits(hidden).argmax(dim=-1)

    def attention_layers(self) -> list[Any]:
        return [layer.self_attn.attn for layer in self.decoder_layers]


def eagle3_aux_layers(config: Any, num_target_layers: int) -> tuple[int, ...]:
    """The target layers whose input an EAGLE-3 head reads: the config's
    ``eagle_aux_hidden_state_layer_ids`` (also under ``eagle_config``), else vLLM's default
    ``(2, L // 2, L - 3)``."""
    ids = getattr(config, "eagle_aux_hidden_state_layer_ids", None)
    eagle_config = getattr(config, "eagle_config", None)
    if ids is None and isinstance(eagle_config, dict):
        ids = eagle_config.get("eagle_aux_hidden_state_layer_ids")
    if ids:
        return tuple(int(i) for i in ids)
    n = num_target_layers
    return (min(2, n - 1), n // 2, max(n - 3, 0))


class Eagle3DecoderLayer(DecoderLayer):
    """EAGLE-3's one layer: its attention reads ``[2H]`` (embedding and hidden state side by
    side), and the hidden state has a norm of its own (``hidden_norm``)."""

    def __init__(self, config: Any, layer_idx: int, ctx: ModelContext) -> None:
        super().__init__(config, layer_idx, ctx, bool(getattr(config, "attention_bias", False)), False)
        h = config.hidden_size
        total_kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        self.self_attn.qkv_proj = QKVParallelLinear(
            2 * h, head_dim_of(config), config.num_attention_heads, total_kv, bias=False, ops=ctx.ops
        )
        self.hidden_norm = RMSNorm(h, config.rms_norm_eps, ctx.ops)


class Eagle3LlamaHead(EagleHead):
    """EAGLE-3 head (see the module docstring)."""

    method = "eagle3"

    def __init__(self, config: Any, target: LlamaForCausalLM, own_embedding: bool, ctx: ModelContext,
                 target_hidden_size: int, num_aux: int, first_layer_id: int) -> None:
        super().__init__(config, target, own_embedding, ctx)
        h = config.hidden_size
        self.fc = Linear(num_aux * target_hidden_size, h, bias=False, ops=ctx.ops)
        self.layers = nn.ModuleList([Eagle3DecoderLayer(config, first_layer_id, ctx)])
        self.norm = RMSNorm(h, config.rms_norm_eps, ctx.ops)
        self.draft_vocab_size = int(getattr(config, "draft_vocab_size", None) or config.vocab_size)
        self.lm_head = ParallelLMHead(self.draft_vocab_size, h, ctx.ops)
        self.norm_before_residual = bool(getattr(config, "norm_before_residual", False))
        self.register_buffer("d2t", None)

    @property
    def layer(self) -> Eagle3DecoderLayer:
        layer: Eagle3DecoderLayer = self.layers[0]  # type: ignore[assignment]
        return layer

    def set_vocab_map(self, d2t: torch.Tensor | None) -> None:
        """``d2t`` [draft_vocab] int64: target id = draft id + d2t[draft id] (None: the same ids)."""
        if d2t is not None and tuple(d2t.shape) != (self.draft_vocab_size,):
            raise ModelLoadError(f"d2t has shape {tuple(d2t.shape)}, expected ({self.draft_vocab_size},)")
        self.d2t = None if d2t is None else d2t.to(device=self.lm_head.weight.device, dtype=torch.int64)

    def combine(self, target_hidden: torch.Tensor) -> torch.Tensor:
        return self.fc.forward(target_hidden)

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, hidden: torch.Tensor, metadata: AttentionMetadata
    ) -> tuple[torch.Tensor, torch.Tensor]:
        layer = self.layer
        embeds = layer.input_layernorm.forward(self.embed(input_ids))
        if self.norm_before_residual:
            hidden = layer.hidden_norm.forward(hidden)
            residual = hidden
        else:
            residual = hidden
            hidden = layer.hidden_norm.forward(hidden)
        x = layer.self_attn.forward(positions, torch.cat([embeds, hidden], dim=-1), metadata)
        x, residual = layer.post_attention_layernorm.forward(x, residual)
        x = layer.mlp.forward(x)
        normed, prenorm = self.norm.forward(x, residual)
        return normed, prenorm

    def draft_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        ids = self.lm_head.logits(hidden).argmax(dim=-1)
        return ids if self.d2t is None else ids + self.d2t[ids]

    def attention_layers(self) -> list[Any]:
        return [self.layer.self_attn.attn]


def head_weights(method: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under the head's parameter names (EAGLE-3's ``midlayer.`` is
    ``layers.0.``); drops what the head does not use (``t2d``, ``d2t``: read apart; EAGLE-1's
    own ``lm_head`` / ``norm``, as the target's LM head is used)."""
    out = {}
    for name, t in tensors.items():
        name = name.removeprefix("model.")
        if name in ("t2d", "d2t") or name.endswith("rotary_emb.inv_freq"):
            continue
        if method == "eagle" and (name.startswith("lm_head.") or name.startswith("norm.")
                                  or name == "layers.0.input_layernorm.weight"):
            continue
        out[name.replace("midlayer.", "layers.0.")] = t
    return out
