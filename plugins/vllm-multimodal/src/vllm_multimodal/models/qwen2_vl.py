"""Qwen2-VL (``Qwen2VLForConditionalGeneration``): its own vision transformer (3-D patch
embedding, 2-D rotary, 2x2 patch merger), dynamic resolution (an image's token count follows
its size), and the core's Qwen2 decoder with M-RoPE. transformers' weight names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vllm_core.plugins.api import ModelContext, MultiModalFeature, language_model_class
from vllm_multimodal.models.base import VisionLanguageModel
from vllm_multimodal.models.clip import activation
from vllm_multimodal.models.mrope import MRotaryEmbedding


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class PatchEmbed(nn.Module):
    def __init__(self, config: Any) -> None:
        super().__init__()
        self.shape = (config.in_channels, config.temporal_patch_size, config.patch_size, config.patch_size)
        self.embed_dim = config.embed_dim
        self.proj = nn.Conv3d(config.in_channels, config.embed_dim, self.shape[1:], self.shape[1:], bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # a Conv3d whose stride is its kernel is one matmul per patch (no cuDNN, no TF32)
        w = self.proj.weight
        return F.linear(x.reshape(-1, w[0].numel()).to(w.dtype), w.reshape(self.embed_dim, -1))


class VisionAttention(nn.Module):
    def __init__(self, config: Any) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.embed_dim, 3 * config.embed_dim)
        self.proj = nn.Linear(config.embed_dim, config.embed_dim)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cu_seqlens: list[int]) -> torch.Tensor:
        n = x.shape[0]
        q, k, v = self.qkv(x).reshape(n, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        qf, kf = q.float(), k.float()
        q = (qf * cos + rotate_half(qf) * sin).to(v.dtype)
        k = (kf * cos + rotate_half(kf) * sin).to(v.dtype)
        outs = []
        for s, e in zip(cu_seqlens[:-1], cu_seqlens[1:]):  # attention within each image (frame)
            qs, ks, vs = (t[s:e].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
            outs.append(F.scaled_dot_product_attention(qs, ks, vs)[0].transpose(0, 1))
        return self.proj(torch.cat(outs).reshape(n, -1))


class VisionMlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: str) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VisionBlock(nn.Module):
    def __init__(self, config: Any) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(config.embed_dim, eps=1e-6)
        self.norm2 = nn.LayerNorm(config.embed_dim, eps=1e-6)
        self.attn = VisionAttention(config)
        self.mlp = VisionMlp(config.embed_dim, int(config.embed_dim * config.mlp_ratio), config.hidden_act)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cu_seqlens: list[int]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin, cu_seqlens)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    def __init__(self, dim: int, context_dim: int, merge: int) -> None:
        super().__init__()
        self.hidden_size = context_dim * merge**2
        self.ln_q = nn.LayerNorm(context_dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(self.hidden_size, self.hidden_size), nn.GELU(),
                                 nn.Linear(self.hidden_size, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.ln_q(x).view(-1, self.hidden_size))  # type: ignore[no-any-return]


class Qwen2VisionTransformer(nn.Module):
    def __init__(self, config: Any) -> None:
        super().__init__()
        self.merge = config.spatial_merge_size
        self.patch_embed = PatchEmbed(config)
        self.blocks = nn.ModuleList(VisionBlock(config) for _ in range(config.depth))
        self.merger = PatchMerger(config.hidden_size, config.embed_dim, self.merge)
        head_dim = config.embed_dim // config.num_heads
        spatial = head_dim // 2
        rope = getattr(config, "rope_parameters", None) or {}
        theta = float(rope.get("rope_theta", 10000.0))
        self.inv_freq: torch.Tensor
        self.register_buffer(
            "inv_freq", 1.0 / theta ** (torch.arange(0, spatial, 2, dtype=torch.float32) / spatial), persistent=False
        )

    def _rotary(self, grids: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [N, 1, head_dim] from each patch's (row, column), laid out merge-block-major."""
        pos = []
        m = self.merge
        for t, h, w in grids:
            hp = torch.arange(h).view(h // m, m, 1, 1).expand(h // m, m, w // m, m).transpose(1, 2).flatten()
            wp = torch.arange(w).view(1, 1, w // m, m).expand(h // m, m, w // m, m).transpose(1, 2).flatten()
            pos.append(torch.stack([hp, wp], dim=-1).repeat(t, 1))
        p = torch.cat(pos).to(device)
        freqs = p[..., None].float() * self.inv_freq.float()  # [N, 2, head_dim / 4]
        freqs = torch.cat([freqs[:, 0], freqs[:, 1]], dim=-1)
        emb = torch.cat([freqs, freqs], dim=-1).unsqueeze(1)
        return emb.cos(), emb.sin()

    def forward(self, pixel_values: torch.Tensor, grids: list[list[int]]) -> torch.Tensor:
        """[patches, C*T*P*P] of the images in ``grids`` order -> [patches / merge^2, hidden]."""
        x = self.patch_embed(pixel_values)
        cos, sin = self._rotary(grids, x.device)
        cu = [0]
        for t, h, w in grids:
            cu.extend(cu[-1] + h * w * (i + 1) for i in range(t))
        for blk in self.blocks:
            x = blk(x, cos, sin, cu)
        return self.merger(x)  # type: ignore[no-any-return]


class Qwen2VLForConditionalGeneration(VisionLanguageModel):
    """Image features: the vision transformer's merged patches (``grid_t * grid_h * grid_w /
    merge^2`` rows per image); text: the core's Qwen2 decoder, its rotary replaced by M-RoPE."""

    uses_mrope: ClassVar[bool] = True

    def __init__(self, config: Any, ctx: ModelContext) -> None:
        super().__init__()
        text = config.get_text_config()
        self.visual = Qwen2VisionTransformer(config.vision_config)
        self.language_model = language_model_class("Qwen2ForCausalLM")(text, ctx)
        rope = getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None) or {}
        section = rope.get("mrope_section", [16, 24, 24])
        layers = self.language_model.model.stage_layers
        shared = MRotaryEmbedding(layers[0].self_attn.rotary_emb, section)
        for layer in layers:
            layer.self_attn.rotary_emb = shared

    def lm_name(self, name: str) -> str | None:
        found = super().lm_name(name)
        if found is None and name.startswith("model.") and not name.startswith("model.visual."):
            return name  # transformers 4.x layout: model.layers.*, model.embed_tokens, model.norm
        return found

    def embed_multimodal(self, features: Sequence[MultiModalFeature]) -> list[torch.Tensor]:
        device = self.visual.patch_embed.proj.weight.device
        grids = [[int(v) for v in f.data["image_grid_thw"].reshape(-1).tolist()] for f in features]
        pixels = torch.cat([f.data["pixel_values"] for f in features]).to(device)
        merged = self.visual(pixels, grids)
        sizes = [t * h * w // self.visual.merge**2 for t, h, w in grids]
        return list(merged.split(sizes))
