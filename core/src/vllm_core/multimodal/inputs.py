"""Multimodal request state and its validation: placeholder ranges, content hashes, limits.

A prompt carries its images as vLLM does: ``{"prompt": "USER: <image>\\n...", "multi_modal_data":
{"image": img_or_list}}``. Input processing (``vllm_core.multimodal.processing``) turns them into a
``MultiModalInputs`` extension state on the request: one ``MultiModalFeature`` per image with its
processor outputs (pixel values), its placeholder range in the expanded prompt and its content
hash. The state crosses into the engine core with the request; the encoder runs there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vllm_core.errors import RequestError
from vllm_core.extensions.state import BlockKey, RequestExtension

DEFAULT_LIMIT_PER_PROMPT = 1
"""Items of each modality one prompt may carry when ``limit_mm_per_prompt`` does not name the
modality (vLLM's long-standing default of one image per prompt; raise it with
``limit_mm_per_prompt={"image": N}``): each image costs encoder time and hundreds of tokens."""


class MultiModalInputError(RequestError):
    """A prompt's multimodal data is invalid for this engine: too many items for
    ``limit_mm_per_prompt``, images given to a text-only model, an item that is not an image,
    placeholders that do not match the images. A ``ValueError`` (the server answers 400)."""


@dataclass(frozen=True)
class PlaceholderRange:
    """Where one item's embeddings go in the expanded prompt: tokens
    ``[offset, offset + length)`` (vLLM's name)."""

    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclass(frozen=True, eq=False)
class MultiModalFeature:
    """One item of a request: what the encoder needs and where its output goes."""

    modality: str
    identifier: str
    """Content hash (``hash_item``): keys the encoder cache and the prefix-cache block hashes."""
    placeholder: PlaceholderRange
    data: Mapping[str, Any] = field(default_factory=dict)
    """The processor's tensors for this item (``pixel_values`` [1, 3, H, W] for LLaVA;
    ``pixel_values`` [patches, C*T*P*P] and ``image_grid_thw`` [1, 3] for Qwen2-VL)."""

    @property
    def num_tokens(self) -> int:
        """Encoder output rows (= placeholder tokens)."""
        return self.placeholder.length


@dataclass(frozen=True, eq=False)
class MultiModalInputs(RequestExtension):
    """A request's multimodal items (in prompt order), as request extension state."""

    features: tuple[MultiModalFeature, ...]
    mrope_positions: Any = None
    """[3, prompt_len] int64 tensor: (temporal, height, width) position of each prompt token, for
    models with multi-axis rotary embeddings (M-RoPE: Qwen2-VL); None: 1-D positions."""
    mrope_position_delta: int = 0
    """M-RoPE: position of a token at index ``i >= prompt_len`` is ``i + delta`` on every axis."""
    block_size: int = 0
    """The prefix cache's block size (the front end knows it from the engine); 0: unknown."""

    def block_hash_extra_keys(self, block_index: int) -> tuple[BlockKey, ...]:
        # An item's hash keys every block its placeholder range overlaps; the hash chain carries
        # it into every later block. So the same text with another image never shares a block
        # from the image on, the same text with the same image does, and the text before the
        # first image (a system prompt) is shared whatever the image. With the block size
        # unknown, block 0 carries every item (nothing after it is shared across images).
        if self.block_size <= 0:
            hit = self.features if block_index == 0 else ()
        else:
            lo, hi = block_index * self.block_size, (block_index + 1) * self.block_size
            hit = tuple(f for f in self.features if f.placeholder.offset < hi and f.placeholder.end > lo)
        return tuple(("mm", f.modality, f.identifier, f.placeholder.offset) for f in hit)

    @property
    def num_encoder_tokens(self) -> int:
        return sum(f.num_tokens for f in self.features)


def parse_multi_modal_data(data: Any, limits: Mapping[str, int], modalities: tuple[str, ...]) -> dict[str, list[Any]]:
    """``multi_modal_data`` as ``{modality: [items]}``, checked against the modalities the model
    takes and ``limits`` (``limit_mm_per_prompt``; a modality it does not name allows
    ``DEFAULT_LIMIT_PER_PROMPT``)."""
    if not isinstance(data, Mapping):
        raise MultiModalInputError(
            f"multi_modal_data must be a dict such as {{'image': image}}, got {type(data).__name__}"
        )
    out: dict[str, list[Any]] = {}
    for modality, value in data.items():
        if modality not in modalities:
            raise MultiModalInputError(
                f"multi_modal_data has {modality!r}, which this model does not take; it takes: "
                f"{', '.join(modalities) or 'no multimodal data'}"
            )
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        limit = limits.get(modality, DEFAULT_LIMIT_PER_PROMPT)
        if len(items) > limit:
            raise MultiModalInputError(
                f"the prompt has {len(items)} {modality}s but at most {limit} {modality}"
                f"{'' if limit == 1 else 's'} per prompt are allowed; raise the limit with "
                f"limit_mm_per_prompt={{'{modality}': {len(items)}}} (--limit-mm-per-prompt "
                f"'{{\"{modality}\": {len(items)}}}') or send fewer"
            )
        if items:
            out[modality] = items
    return out
