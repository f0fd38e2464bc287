"""Random-weight EAGLE / EAGLE-3 heads in their Hugging Face checkpoint layout (``config.json``
and ``model.safetensors`` in a directory), for tests and benchmarks: their drafts are almost never
accepted, so they measure the mechanics (exact output, what a drafting step costs), not speed-ups.
"""

from __future__ import annotations

import os
from typing import Any

import torch


def _layer(prefix: str, hidden: int, inter: int, heads: int, kv_heads: int, head_dim: int, attn_in: int,
           gen: torch.Generator, scale: float, input_norm: bool) -> dict[str, torch.Tensor]:
    def w(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    out = {
        f"{prefix}.self_attn.q_proj.weight": w(heads * head_dim, attn_in),
        f"{prefix}.self_attn.k_proj.weight": w(kv_heads * head_dim, attn_in),
        f"{prefix}.self_attn.v_proj.weight": w(kv_heads * head_dim, attn_in),
        f"{prefix}.self_attn.o_proj.weight": w(hidden, heads * head_dim),
        f"{prefix}.mlp.gate_proj.weight": w(inter, hidden),
        f"{prefix}.mlp.up_proj.weight": w(inter, hidden),
        f"{prefix}.mlp.down_proj.weight": w(hidden, inter),
        f"{prefix}.post_attention_layernorm.weight": 1 + w(hidden) * 0.1,
    }
    if input_norm:
        out[f"{prefix}.input_layernorm.weight"] = 1 + w(hidden) * 0.1
    return out


def save_eagle_head(path: str, target_config: Any, method: str = "eagle", seed: int = 0, scale: float = 0.1,
                    own_embedding: bool = True, draft_vocab_size: int | None = None,
                    aux_layers: list[int] | None = None, dtype: torch.dtype = torch.float32,
                    **overrides: Any) -> str:
    """A random head for ``target_config`` (a transformers LlamaConfig): EAGLE-1 (``fc``,
    ``layers.0.*`` without its input norm) or EAGLE-3 (``midlayer.*``, ``fc`` over three layers,
    ``norm``, ``lm_head`` over ``draft_vocab_size`` tokens with ``d2t`` / ``t2d``)."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    gen = torch.Generator().manual_seed(seed)
    num_kv = getattr(target_config, "num_key_value_heads", None) or target_config.num_attention_heads
    h = overrides.pop("hidden_size", target_config.hidden_size)
    heads, kv_heads = target_config.num_attention_heads, num_kv
    head_dim = h // heads
    inter, vocab = target_config.intermediate_size, target_config.vocab_size
    base = {k: v for k, v in target_config.to_dict().items()
            if k not in ("architectures", "torch_dtype", "dtype", "_name_or_path", "transformers_version")}
    base.update(vocab_size=vocab, hidden_size=h, intermediate_size=inter, num_hidden_layers=1,
                num_attention_heads=heads, num_key_value_heads=kv_heads, tie_word_embeddings=False)
    base.pop("head_dim", None)
    config = LlamaConfig(**base)  # the target's rotary settings, norms and context length
    tensors: dict[str, torch.Tensor] = {}
    if own_embedding:
        tensors["embed_tokens.weight"] = torch.randn(vocab, h, generator=gen) * scale
    if method == "eagle":
        config.architectures = ["LlamaForCausalLM"]
        tensors["fc.weight"] = torch.randn(h, 2 * h, generator=gen) * scale
        tensors.update(_layer("layers.0", h, inter, heads, kv_heads, head_dim, h, gen, scale, input_norm=False))
    else:
        config.architectures = ["LlamaForCausalLMEagle3"]
        draft_vocab = draft_vocab_size or vocab
        config.draft_vocab_size = draft_vocab
        config.target_hidden_size = target_config.hidden_size
        if aux_layers is not None:
            config.eagle_aux_hidden_state_layer_ids = aux_layers
        tensors["fc.weight"] = torch.randn(h, 3 * target_config.hidden_size, generator=gen) * scale
        tensors.update(_layer("midlayer", h, inter, heads, kv_heads, head_dim, 2 * h, gen, scale, input_norm=True))
        tensors["midlayer.hidden_norm.weight"] = 1 + torch.randn(h, generator=gen) * 0.01
        tensors["norm.weight"] = 1 + torch.randn(h, generator=gen) * 0.01
        tensors["lm_head.weight"] = torch.randn(draft_vocab, h, generator=gen) * scale
        if draft_vocab < vocab:  # the draft vocabulary: every other target id, mapped back by offsets
            ids = torch.arange(draft_vocab, dtype=torch.int64) * (vocab // draft_vocab)
            tensors["d2t"] = ids - torch.arange(draft_vocab, dtype=torch.int64)
            t2d = torch.zeros(vocab, dtype=torch.bool)
            t2d[ids] = True
            tensors["t2d"] = t2d
    for key, value in overrides.items():
        setattr(config, key, value)
    os.makedirs(path, exist_ok=True)
    config.save_pretrained(path)
    save_file(
        {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()},
        os.path.join(path, "model.safetensors"),
    )
    return path
