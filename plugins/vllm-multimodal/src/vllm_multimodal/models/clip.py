"""CLIP's vision transformer (LLaVA's vision tower), in plain PyTorch with transformers' names.

The encoder runs once per image (its output is cached), so it uses ``scaled_dot_product_attention``
on whole images rather than the paged attention of the decoder.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def activation(name: str) -> Any:
    """transformers' activation by config name."""
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name in ("gelu", "gelu_python"):
        return F.gelu
    if name in ("gelu_pytorch_tanh", "gelu_new", "gelu_fast"):
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "silu":
        return F.silu
    raise ValueError(f"activation {name!r} is not supported; supported: quick_gelu, gelu, gelu_pytorch_tanh, silu")


class CLIPEmbeddings(nn.Module):
    def __init__(self, config: Any) -> None:
        super().__init__()
        self.class_embedding = nn.Parameter(torch.empty(config.hidden_size))
        self.patch_embedding = nn.Conv2d(
            config.num_channels, config.hidden_size, config.patch_size, config.patch_size, bias=False
        )
        num_positions = (config.image_size // config.patch_size) ** 2 + 1
        self.position_embedding = nn.Embedding(num_positions, config.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # the stride-p convolution as one matmul over the unfolded patches (no cuDNN: no TF32
        # convolution on GPUs, the same sums on every platform)
        w = self.patch_embedding.weight  # [D, C, p, p]
        b, c, h, wd = pixel_values.shape
        p = w.shape[-1]
        x = pixel_values.to(w.dtype).reshape(b, c, h // p, p, wd // p, p).permute(0, 2, 4, 1, 3, 5)
        patches = F.linear(x.reshape(b, (h // p) * (wd // p), c * p * p), w.reshape(w.shape[0], -1))  # [B, N, D]
        cls = self.class_embedding.expand(patches.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight[: patches.shape[1] + 1]


class CLIPAttention(nn.Module):
    def __init__(self, config: Any) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        h = self.num_heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, h, d // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)))
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class CLIPMLP(nn.Module):
    def __init__(self, config: Any) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = activation(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, config: Any) -> None:
        super().__init__()
        self.self_attn = CLIPAttention(config)
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = CLIPMLP(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, config: Any, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(config) for _ in range(num_layers))


class CLIPVisionTower(nn.Module):
    """Embeddings, ``pre_layrnorm`` (transformers' spelling) and the encoder layers up to the one
    whose output the model reads (``feature_layer``, e.g. -2 for LLaVA-1.5: the layers after it
    are not built, and their weights are skipped)."""

    def __init__(self, config: Any, feature_layer: int) -> None:
        super().__init__()
        total = config.num_hidden_layers
        # hidden_states[k]: k = 0 is the embeddings, k = i the output of layer i
        index = feature_layer if feature_layer >= 0 else total + 1 + feature_layer
        if not 0 <= index <= total:
            raise ValueError(f"vision_feature_layer {feature_layer} is outside the tower's {total} layers")
        self.num_layers = index
        self.embeddings = CLIPEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.encoder = CLIPEncoder(config, index)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> the feature layer's hidden states [B, 1 + patches, D]."""
        x = self.pre_layrnorm(self.embeddings(pixel_values))
        for layer in self.encoder.layers:
            x = layer(x)
        return x
