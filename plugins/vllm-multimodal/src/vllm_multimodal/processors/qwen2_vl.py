"""Qwen2-VL's front end: the model's ``Qwen2VLImageProcessor`` (dynamic resolution: the image is
resized to a multiple of ``patch * merge`` within ``min_pixels``..``max_pixels`` and cut into
patches), ``<|image_pad|>`` expanded to ``t * h * w / merge^2`` tokens, and the M-RoPE positions
of the whole prompt (transformers' ``get_rope_index``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vllm_core.plugins.api import MultiModalFeature, MultiModalProcessor, ProcessedItem
from vllm_multimodal.processors.images import as_rgb_images, load_image_processor


class Qwen2VLProcessor(MultiModalProcessor):
    def __init__(self, model_path: str, hf_config: Any, tokenizer: Any) -> None:
        super().__init__(model_path, hf_config, tokenizer)
        self.image_processor = load_image_processor(model_path)
        self.image_token_id = int(hf_config.image_token_id)
        self.merge = int(hf_config.vision_config.spatial_merge_size)

    def placeholder_text(self, modality: str) -> str:
        pad = "<|image_pad|>" if self.tokenizer is None else self.tokenizer.convert_ids_to_tokens(self.image_token_id)
        return f"<|vision_start|>{pad}<|vision_end|>"

    def placeholder_token_id(self, modality: str) -> int:
        return self.image_token_id

    def process(self, modality: str, items: Sequence[Any]) -> list[ProcessedItem]:
        out = []
        for image in as_rgb_images(items):  # one call per image: patches of each image apart
            data = self.image_processor(images=[image], return_tensors="pt")
            grid = data["image_grid_thw"]  # [1, 3]
            t, h, w = (int(v) for v in grid[0].tolist())
            out.append(ProcessedItem(t * h * w // self.merge**2,
                                     {"pixel_values": data["pixel_values"], "image_grid_thw": grid}))
        return out

    def mrope_positions(self, token_ids: Sequence[int], features: Sequence[MultiModalFeature]) -> tuple[Any, int]:
        """Text tokens count up on all three axes; an image's tokens take (t, row, column) of
        their merged patch offset by the position where the image starts; text after an image
        continues from ``start + max(rows, columns)``."""
        parts: list[torch.Tensor] = []
        cursor, pos = 0, 0
        for f in sorted(features, key=lambda f: f.placeholder.offset):
            n_text = f.placeholder.offset - cursor
            parts.append(torch.arange(n_text).expand(3, -1) + pos)
            pos += n_text
            t, h, w = (int(v) for v in f.data["image_grid_thw"].reshape(-1).tolist())
            h, w = h // self.merge, w // self.merge
            grid = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"))
            parts.append(grid.reshape(3, -1) + pos)
            pos += max(h, w)
            cursor = f.placeholder.end
        parts.append(torch.arange(len(token_ids) - cursor).expand(3, -1) + pos)
        positions = torch.cat(parts, dim=1).to(torch.int64)
        delta = int(positions.max()) + 1 - len(token_ids)
        return positions, delta
