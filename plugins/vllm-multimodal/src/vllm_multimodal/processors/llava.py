"""LLaVA-1.5's front end: CLIP image processor (resize, crop, normalize), ``<image>`` expanded to
one token per vision patch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vllm_core.plugins.api import MultiModalProcessor, ProcessedItem
from vllm_multimodal.processors.images import as_rgb_images, load_image_processor


class LlavaProcessor(MultiModalProcessor):
    """Pixel values from the model's own ``CLIPImageProcessor``; an image takes
    ``(H / patch) * (W / patch)`` tokens (+1 with ``vision_feature_select_strategy="full"``)."""

    def __init__(self, model_path: str, hf_config: Any, tokenizer: Any) -> None:
        super().__init__(model_path, hf_config, tokenizer)
        self.image_processor = load_image_processor(model_path)
        self.image_token_id = int(hf_config.image_token_index)
        self.patch_size = int(hf_config.vision_config.patch_size)
        self.extra_tokens = 1 if hf_config.vision_feature_select_strategy == "full" else 0

    def placeholder_text(self, modality: str) -> str:
        if self.tokenizer is None:
            return "<image>"
        return str(self.tokenizer.convert_ids_to_tokens(self.image_token_id))

    def placeholder_token_id(self, modality: str) -> int:
        return self.image_token_id

    def process(self, modality: str, items: Sequence[Any]) -> list[ProcessedItem]:
        images = as_rgb_images(items)
        pixels = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        h, w = pixels.shape[-2:]
        n = (h // self.patch_size) * (w // self.patch_size) + self.extra_tokens
        return [ProcessedItem(n, {"pixel_values": pixels[i : i + 1]}) for i in range(len(images))]
