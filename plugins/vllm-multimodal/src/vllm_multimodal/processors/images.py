"""Checks and loading shared by the image processors (PIL is imported here, in the front end
of a vision-language model only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vllm_core.plugins.api import ModelLoadError, MultiModalInputError


def as_rgb_images(items: Sequence[Any]) -> list[Any]:
    """PIL images in RGB (what the HF processors are trained on); anything else is an error."""
    from PIL import Image

    out = []
    for i, item in enumerate(items):
        if not isinstance(item, Image.Image):
            raise MultiModalInputError(
                f"image {i} is a {type(item).__name__}, not a PIL.Image; decode it first (the server "
                "decodes image_url parts) or pass PIL.Image.open(path)"
            )
        out.append(item if item.mode == "RGB" else item.convert("RGB"))
    return out


def load_image_processor(model_path: str) -> Any:
    """The model directory's Hugging Face image processor (``preprocessor_config.json``)."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(model_path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{model_path!r} has no image processor ({exc}); save the model's processor next to its "
            "weights (processor.save_pretrained(path))"
        ) from exc
