"""Images in chat requests: parse the content parts, refuse what this server cannot take, load
the rest without blocking the event loop.

Order of the checks, cheapest first, so a bad request costs no download: the parts' shapes and
the image count (``--limit-mm-per-prompt``) while parsing; then whether the served model takes
images at all; only then the fetches (``--allowed-local-media-path``,
``$VLLM_IMAGE_FETCH_TIMEOUT``, ``$VLLM_IMAGE_FETCH_MAX_BYTES``). Every refusal is a 400 naming
the content part (``messages[0].content[1]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vllm_core.entrypoints.openai.errors import APIError
from vllm_core.multimodal.content_parts import ParsedChat, load_images_async, parse_chat_content
from vllm_core.multimodal.media import MediaConnector


def model_accepts_images(hf_config: Any) -> bool:
    """Whether the model's Hugging Face config has a vision tower (``vision_config``, as LLaVA,
    Qwen2-VL and Idefics3 have); the engine checks again for what it can actually run."""
    return getattr(hf_config, "vision_config", None) is not None


class ChatMedia:
    """The server's image policy for chat requests (``/v1/chat/completions``, ``/v1/messages``)."""

    def __init__(self, connector: MediaConnector, limit_mm_per_prompt: Mapping[str, int] | None,
                 accepts_images: bool, model_name: str) -> None:
        self.connector = connector
        self.limit_mm_per_prompt = dict(limit_mm_per_prompt) if limit_mm_per_prompt else None
        self.accepts_images = accepts_images
        self.model_name = model_name

    def parse(self, messages: Sequence[Mapping[str, Any]], labels: Sequence[str] | None = None) -> ParsedChat:
        """Template messages and image references; bad parts and too many images raise 400s."""
        return parse_chat_content(messages, self.limit_mm_per_prompt, labels)

    def check_accepted(self, parsed: ParsedChat) -> None:
        """A text-only model gets no images: a 400 naming every image part."""
        if parsed.images and not self.accepts_images:
            raise APIError(
                f"{parsed.image_parts}: the model {self.model_name!r} is text-only, so it takes no image parts; "
                "send text only, or serve a vision-language model (LLaVA-1.5, Qwen2-VL) with the vllm-multimodal "
                "plugin (pip install ./plugins/vllm-multimodal)", 400, parsed.images[0].where)

    async def load(self, parsed: ParsedChat) -> list[Any]:
        """The images of ``parsed``, in order (none: no work)."""
        if not parsed.images:
            return []
        self.check_accepted(parsed)
        return await load_images_async(parsed.images, self.connector)


__all__ = ["ChatMedia", "model_accepts_images"]
