"""Multimodal processors: how a model turns images into placeholder tokens and encoder inputs.

Plugins register a ``MultiModalProcessor`` subclass per Hugging Face architecture through
``register_multimodal_processors(register)``: ``register("LlavaForConditionalGeneration",
LlavaMultiModalProcessor)``. ``processor_for`` answers, for a model, the processor or None (a
text-only model): the server asks it whether the served model accepts images and which
placeholder text a chat template inserts for one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from vllm_core.multimodal.inputs import MultiModalFeature


@dataclass
class ProcessedItem:
    """One item after the model's own processor: what replaces its placeholder and what the
    encoder reads."""

    num_tokens: int
    """Placeholder tokens the item expands to (= its encoder output rows)."""
    data: dict[str, Any] = field(default_factory=dict)
    """Tensors for the encoder (``pixel_values``, ``image_grid_thw``, ...), on the CPU."""


class MultiModalProcessor:
    """Base class of a model family's processor (subclass it in a plugin).

    ``create`` runs once per engine front end; ``process`` runs per request in the front end
    (the input processor, off the engine core's step loop), so it may be slow-ish (decoding,
    resizing) without stalling running requests.
    """

    modalities: ClassVar[tuple[str, ...]] = ("image",)
    """What ``multi_modal_data`` may hold for this model."""

    def __init__(self, model_path: str, hf_config: Any, tokenizer: Any | None) -> None:
        """``tokenizer``: the model's, or None (a directory without one: token-id prompts)."""
        self.model_path = model_path
        self.hf_config = hf_config
        self.tokenizer = tokenizer

    def placeholder_text(self, modality: str) -> str:
        """What a prompt writes where one item goes (``"<image>"`` for LLaVA,
        ``"<|vision_start|><|image_pad|><|vision_end|>"`` for Qwen2-VL): chat templates and
        the server's content parts insert it once per item."""
        raise NotImplementedError

    def placeholder_token_id(self, modality: str) -> int:
        """The token id in the tokenized prompt that marks one item (expanded to
        ``ProcessedItem.num_tokens`` copies)."""
        raise NotImplementedError

    def process(self, modality: str, items: Sequence[Any]) -> list[ProcessedItem]:
        """The model's own preprocessing of the prompt's items of one modality, in order."""
        raise NotImplementedError

    def mrope_positions(self, token_ids: Sequence[int], features: Sequence[MultiModalFeature]) -> tuple[Any, int] | None:
        """For M-RoPE models: ([3, len(token_ids)] int64 positions, delta for later tokens);
        None (the default): ordinary 1-D positions."""
        return None


def processors() -> Any:
    """Architecture name -> ``MultiModalProcessor`` class, from every plugin's hook."""
    from vllm_core.plugins.registry import multimodal_processors

    return multimodal_processors()


def architectures(hf_config: Any) -> list[str]:
    return list(getattr(hf_config, "architectures", None) or [])


def processor_for(model_config: Any, hf_config: Any = None, tokenizer: Any = None) -> MultiModalProcessor | None:
    """The multimodal processor of a model, or None when the model takes no images.

    ``model_config``: a ``ModelConfig`` (or a model path); ``hf_config`` / ``tokenizer``: the
    loaded ones (read from the model path when omitted; a model directory without a tokenizer
    gets None, and its prompts must be token ids). The answer's ``placeholder_text("image")``
    is what goes into a prompt per image.
    """
    path = model_config if isinstance(model_config, str) else getattr(model_config, "model", "")
    if hf_config is None:
        from transformers import AutoConfig

        try:
            hf_config = AutoConfig.from_pretrained(path)
        except (OSError, ValueError):  # a .gguf file, the default model: text-only models here
            return None
    registered = processors()
    arch = next((a for a in architectures(hf_config) if a in registered), None)
    if arch is None:
        return None
    if tokenizer is None:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(getattr(model_config, "tokenizer", None) or path)
        except (OSError, ValueError):
            tokenizer = None  # dummy-weight directories: token-id prompts only
    cls: type[MultiModalProcessor] = registered.get(arch)
    return cls(path, hf_config, tokenizer)
