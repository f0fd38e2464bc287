"""LLaVA-1.5 (``LlavaForConditionalGeneration``): CLIP vision tower, two-layer MLP projector,
the core's Llama decoder. transformers' weight names (4.x ``language_model.model.*`` and 5.x
``model.language_model.*`` checkpoints both load)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from vllm_core.plugins.api import ModelContext, ModelLoadError, MultiModalFeature, language_model_class
from vllm_multimodal.models.base import VisionLanguageModel
from vllm_multimodal.models.clip import CLIPVisionTower, activation


class LlavaProjector(nn.Module):
    def __init__(self, vision_dim: int, text_dim: int, act: str, bias: bool) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(vision_dim, text_dim, bias=bias)
        self.linear_2 = nn.Linear(text_dim, text_dim, bias=bias)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class LlavaForConditionalGeneration(VisionLanguageModel):
    """Image features: the tower's ``vision_feature_layer`` output without the CLS token
    (``vision_feature_select_strategy="default"``; ``"full"`` keeps it), projected to the
    decoder's width; one row per placeholder token."""

    def __init__(self, config: Any, ctx: ModelContext) -> None:
        super().__init__()
        layer = config.vision_feature_layer
        if not isinstance(layer, int):
            raise ModelLoadError(f"vision_feature_layer {layer!r}: only one layer (an int) is supported")
        self.strategy = config.vision_feature_select_strategy
        if self.strategy not in ("default", "full"):
            raise ModelLoadError(f"vision_feature_select_strategy {self.strategy!r}; supported: default, full")
        self.vision_tower = CLIPVisionTower(config.vision_config, layer)
        text = config.text_config
        self.multi_modal_projector = LlavaProjector(
            config.vision_config.hidden_size, text.hidden_size, config.projector_hidden_act,
            bool(getattr(config, "multimodal_projector_bias", True)),
        )
        self.language_model = language_model_class(text)(text, ctx)

    def vision_name(self, name: str) -> str | None:
        name = name.removeprefix("model.").replace("vision_tower.vision_model.", "vision_tower.")
        if name.startswith("vision_tower.encoder.layers."):
            if int(name.split(".")[3]) >= self.vision_tower.num_layers:
                return None  # after the feature layer: never run
        if name.startswith("vision_tower.post_layernorm."):
            return None
        return name

    def embed_multimodal(self, features: Sequence[MultiModalFeature]) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        # images of one size run as one batch
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, f in enumerate(features):
            by_shape.setdefault(tuple(f.data["pixel_values"].shape[1:]), []).append(i)
        results: dict[int, torch.Tensor] = {}
        device = self.multi_modal_projector.linear_1.weight.device
        for idx in by_shape.values():
            pixels = torch.cat([features[i].data["pixel_values"] for i in idx]).to(device)
            hidden = self.vision_tower(pixels)
            if self.strategy == "default":
                hidden = hidden[:, 1:]
            projected = self.multi_modal_projector(hidden)
            for j, i in enumerate(idx):
                results[i] = projected[j]
        out = [results[i] for i in range(len(features))]
        return out
