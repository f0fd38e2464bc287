"""Multimodal inputs: the core's side of images in prompts.

The core knows the *shape* of multimodal requests (``multi_modal_data`` in a prompt, the per-image
placeholder ranges and content hashes carried as request extension state, the per-prompt limits
and their errors); plugins (``register_multimodal_processors``, e.g. ``vllm-multimodal``) know the
models: how an image becomes pixel values and how many placeholder tokens it takes.

Importing this package imports neither PIL nor torchvision: a text-only engine never loads
image code.
"""

from vllm_core.multimodal.hashing import hash_item
from vllm_core.multimodal.inputs import (
    DEFAULT_LIMIT_PER_PROMPT,
    MultiModalFeature,
    MultiModalInputError,
    MultiModalInputs,
    PlaceholderRange,
)
from vllm_core.multimodal.registry import MultiModalProcessor, ProcessedItem, processor_for

__all__ = [
    "DEFAULT_LIMIT_PER_PROMPT", "MultiModalFeature", "MultiModalInputError", "MultiModalInputs",
    "MultiModalProcessor", "PlaceholderRange", "ProcessedItem", "hash_item", "processor_for",
]
