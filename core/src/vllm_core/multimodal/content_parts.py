"""Chat messages with content parts -> messages for the chat template and their images, in order.

Accepted parts (a message's ``content`` is a string or a list of them):

- OpenAI: ``{"type": "text", "text": ...}``, ``{"type": "image_url", "image_url": {"url": ...,
  "detail": ...}}`` (the URL may also be given as a plain string), and vLLM's offline
  ``{"type": "image_pil", "image_pil": <PIL.Image>}``;
- Anthropic ``/v1/messages`` image blocks: ``{"type": "image", "source": {"type": "base64",
  "media_type": "image/png", "data": ...}}`` and ``{"type": "image", "source": {"type": "url",
  "url": ...}}``.

A message with images gets a content list of ``{"type": "text", "text": ...}`` and
``{"type": "image"}`` items, which Hugging Face chat templates of vision-language models turn
into the model's image placeholder. A text-only message gets its text parts joined by newlines
into a plain string, so text models see exactly what they saw before content parts existed.

Nothing here loads an image: ``ImageRef`` says where each one comes from, and
``media.MediaConnector`` loads it (``load_images`` / ``load_images_async``). ``ChatImagePolicy``
puts it together for one engine, as ``LLM.chat`` and the server use it: parse, refuse (a
text-only model, too many images) before anything is fetched, load, and fit the messages to the
chat template (a template that renders ``content`` only as a string gets the model's placeholder
text instead of ``{"type": "image"}`` items, as vLLM's "string" content format).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vllm_core.multimodal.inputs import DEFAULT_LIMIT_PER_PROMPT, MultiModalInputError
from vllm_core.multimodal.media import MediaConnector, MediaError

IMAGE_PART_TYPES = ("image_url", "image_pil", "image")
DETAILS = ("auto", "low", "high")
ANTHROPIC_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


class ContentPartError(ValueError):
    """A content part the parser cannot read; ``param`` names it (``messages[0].content[1]``)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ImageLimitError(ContentPartError, MultiModalInputError):
    """More images in one prompt than ``limit_mm_per_prompt`` allows (the engine's own error
    class for it too, raised here before anything is fetched)."""


@dataclass(frozen=True)
class ImageRef:
    """One image of a conversation, not loaded yet."""

    where: str
    """The part it came from, for error messages: ``messages[0].content[1]``."""
    url: str | None = None
    """A ``data:`` / ``file://`` / ``http(s)://`` URL (None when ``image`` is given)."""
    image: Any = None
    """An image object given directly (``image_pil`` parts)."""


@dataclass
class ParsedChat:
    """The messages to render with the chat template and the images they refer to, in order."""

    messages: list[dict[str, Any]]
    images: list[ImageRef] = field(default_factory=list)

    @property
    def image_parts(self) -> str:
        """The image parts, named for an error message (``messages[0].content[1], ...``)."""
        return ", ".join(ref.where for ref in self.images)


def _image_ref(part: dict[str, Any], where: str) -> ImageRef:
    kind = part["type"]
    if kind == "image_url":
        value = part.get("image_url")
        url = value.get("url") if isinstance(value, dict) else value
        if not isinstance(url, str) or not url:
            raise ContentPartError(f"{where}: an image_url part needs image_url.url, a data:, file:// or http(s):// "
                                   f"URL string, got {value!r}", where)
        detail = value.get("detail") if isinstance(value, dict) else None
        if detail is not None and detail not in DETAILS:
            raise ContentPartError(f"{where}: image_url.detail {detail!r} is not one of {', '.join(DETAILS)}", where)
        return ImageRef(where, url=url)
    if kind == "image_pil":
        image = part.get("image_pil")
        if image is None or not hasattr(image, "convert"):
            raise ContentPartError(f"{where}: an image_pil part needs image_pil, a PIL.Image.Image, got "
                                   f"{type(image).__name__}", where)
        return ImageRef(where, image=image)
    source = part.get("source")  # Anthropic's image block
    if not isinstance(source, dict):
        raise ContentPartError(f"{where}: an image block needs a source: {{'type': 'base64', 'media_type': "
                               f"'image/png', 'data': ...}} or {{'type': 'url', 'url': ...}}, got {source!r}", where)
    if source.get("type") == "base64":
        media_type, data = source.get("media_type"), source.get("data")
        if media_type not in ANTHROPIC_MEDIA_TYPES:
            raise ContentPartError(f"{where}: source.media_type {media_type!r} is not one of "
                                   f"{', '.join(ANTHROPIC_MEDIA_TYPES)}", where)
        if not isinstance(data, str) or not data:
            raise ContentPartError(f"{where}: source.data must be the base64 image bytes", where)
        return ImageRef(where, url=f"data:{media_type};base64,{data}")
    if source.get("type") == "url":
        url = source.get("url")
        if not isinstance(url, str) or not url:
            raise ContentPartError(f"{where}: source.url must be a URL string, got {url!r}", where)
        return ImageRef(where, url=url)
    raise ContentPartError(f"{where}: source.type {source.get('type')!r} is not one of base64, url", where)


def _parse_content(content: list[Any], label: str, images: list[ImageRef]) -> str | list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    has_image = False
    for j, part in enumerate(content):
        where = f"{label}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise ContentPartError(f"{where}: a text part needs text, a string, got {text!r}", where)
            items.append({"type": "text", "text": text})
        elif kind in IMAGE_PART_TYPES:
            images.append(_image_ref(part, where))
            items.append({"type": "image"})
            has_image = True
        else:
            raise ContentPartError(f"{where}: content part type {kind!r} is not supported; use text, image_url "
                                   f"(or image_pil offline, or an Anthropic image block), got {part!r}"[:400], where)
    if not has_image:
        return "\n".join(item["text"] for item in items)
    return items


def check_image_limit(images: Sequence[ImageRef], limit_mm_per_prompt: Mapping[str, int] | None) -> None:
    """At most ``limit_mm_per_prompt["image"]`` images in one prompt (no limit given: any); the
    error names the first part past the limit."""
    limit = (limit_mm_per_prompt or {}).get("image")
    if limit is None or len(images) <= limit:
        return
    where = images[limit].where
    raise ImageLimitError(f"{where}: {len(images)} images in one prompt, more than the limit of {limit} "
                          f"(limit_mm_per_prompt={dict(limit_mm_per_prompt or {})}); send at most {limit}, or start "
                          f"the engine with a larger --limit-mm-per-prompt '{{\"image\": {len(images)}}}'", where)


def parse_chat_content(
    messages: Sequence[Mapping[str, Any]],
    limit_mm_per_prompt: Mapping[str, int] | None = None,
    labels: Sequence[str] | None = None,
) -> ParsedChat:
    """Split ``messages`` into template messages and image references (see the module doc).

    ``labels[i]`` names message ``i`` in errors (default ``messages[i]``: a caller that built
    the messages from another shape, as ``/v1/messages`` does, passes the client's names).
    Too many images for ``limit_mm_per_prompt`` raise ``ImageLimitError`` before anything is
    fetched.
    """
    out: list[dict[str, Any]] = []
    images: list[ImageRef] = []
    for i, message in enumerate(messages):
        label = labels[i] if labels is not None else f"messages[{i}]"
        m = dict(message)
        content = m.get("content")
        if isinstance(content, list):
            m["content"] = _parse_content(content, label, images)
        elif content is None:
            m["content"] = ""
        elif not isinstance(content, str):
            raise ContentPartError(f"{label}.content must be a string or a list of parts, got "
                                   f"{type(content).__name__}", f"{label}.content")
        out.append(m)
    check_image_limit(images, limit_mm_per_prompt)
    return ParsedChat(out, images)


def load_images(refs: Sequence[ImageRef], connector: MediaConnector) -> list[Any]:
    """The images of ``refs`` in order (PIL images given directly pass through, as RGB)."""
    return [_as_rgb(ref) if ref.image is not None else connector.load_image(ref.url or "", ref.where) for ref in refs]


async def load_images_async(refs: Sequence[ImageRef], connector: MediaConnector) -> list[Any]:
    """``load_images`` for the server: all fetched concurrently, none blocking the event loop."""
    async def one(ref: ImageRef) -> Any:
        if ref.image is not None:
            return _as_rgb(ref)
        return await connector.load_image_async(ref.url or "", ref.where)

    tasks = [asyncio.ensure_future(one(ref)) for ref in refs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:  # one failed: the others' downloads are of no use
            task.cancel()
        raise


def _as_rgb(ref: ImageRef) -> Any:
    try:
        return ref.image if getattr(ref.image, "mode", "RGB") == "RGB" else ref.image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise MediaError(f"{ref.where}: the image_pil image cannot be converted to RGB ({exc})", ref.where) from None


_ITERATES_CONTENT = re.compile(r"""\bfor\s+\w+\s+in\s+[\w.\[\]'"]*content\b""")


def renders_content_parts(chat_template: str) -> bool:
    """Whether a chat template loops over a message's ``content`` (Hugging Face templates of
    vision-language models do: ``{% for item in message['content'] %}``), so it takes content
    lists; otherwise it renders ``content`` as one string (vLLM's "string" content format)."""
    return _ITERATES_CONTENT.search(chat_template) is not None


def flatten_image_content(messages: Sequence[Mapping[str, Any]], placeholder: str) -> list[dict[str, Any]]:
    """Messages for a template that renders ``content`` as a string: each image item becomes the
    model's placeholder text, placed before the message's text as vLLM does (a placeholder the
    text already holds counts: ``"<image> and <image>, which differs?"`` stays as written)."""
    out = []
    for message in messages:
        m = dict(message)
        content = m.get("content")
        if isinstance(content, list):
            text = "\n".join(item["text"] for item in content if item["type"] == "text")
            missing = sum(1 for item in content if item["type"] == "image") - text.count(placeholder)
            m["content"] = "\n".join([placeholder] * max(0, missing) + [text])
        out.append(m)
    return out


def as_content_parts(message: Mapping[str, Any]) -> dict[str, Any]:
    """``message`` with a string ``content`` turned into ``[{"type": "text", "text": content}]``."""
    m = dict(message)
    if isinstance(m.get("content"), str):
        m["content"] = [{"type": "text", "text": m["content"]}]
    return m


class ChatImagePolicy:
    """One engine's handling of images in chat messages (``LLM.chat`` and the server's chat and
    messages routes): what it accepts, how many, where images may come from.

    ``placeholder``: the model's image placeholder text (None: a text-only model, which gets no
    images); ``limits``: ``limit_mm_per_prompt`` (a modality it does not name allows
    ``DEFAULT_LIMIT_PER_PROMPT``, as the engine's own check); ``model_name`` names the model in
    errors.
    """

    def __init__(self, connector: MediaConnector, placeholder: str | None, limits: Mapping[str, int] | None,
                 model_name: str) -> None:
        self.connector = connector
        self.placeholder = placeholder
        self.limits = dict(limits or {})
        self.model_name = model_name

    @classmethod
    def for_engine(cls, connector: MediaConnector, multimodal: Any, model_name: str) -> ChatImagePolicy:
        """The policy of an engine's ``MultiModalPromptProcessor`` (``input_processor.multimodal``)."""
        proc = multimodal.processor
        placeholder = proc.placeholder_text("image") if proc is not None and "image" in proc.modalities else None
        return cls(connector, placeholder, multimodal.limits, model_name)

    @property
    def accepts_images(self) -> bool:
        return self.placeholder is not None

    @property
    def image_limit(self) -> int:
        return self.limits.get("image", DEFAULT_LIMIT_PER_PROMPT)

    def parse(self, messages: Sequence[Mapping[str, Any]], labels: Sequence[str] | None = None) -> ParsedChat:
        """``parse_chat_content``, then the refusals that need no download: images for a
        text-only model (``MultiModalInputError`` naming every image part), too many images."""
        parsed = parse_chat_content(messages, None, labels)
        if parsed.images and not self.accepts_images:
            err = MultiModalInputError(
                f"{parsed.image_parts}: the model {self.model_name!r} is text-only, so it takes no image parts; "
                "send text only, or serve a vision-language model (LLaVA-1.5, Qwen2-VL) with the vllm-multimodal "
                "plugin (pip install ./plugins/vllm-multimodal)")
            err.param = parsed.images[0].where  # type: ignore[attr-defined]
            raise err
        check_image_limit(parsed.images, {"image": self.image_limit})
        return parsed

    def template_messages(self, parsed: ParsedChat, chat_template: Any) -> list[dict[str, Any]]:
        """``parsed.messages`` in the form ``chat_template`` renders (vLLM's content formats): a
        text-only model's messages as they are; a vision-language model whose template loops over
        ``content`` gets every content as a list of parts (a plain string becomes one text part:
        such templates, llava-hf's among them, render nothing of a string); one whose template
        renders ``content`` as a string gets the image placeholders written into the text."""
        if self.placeholder is None:
            return parsed.messages
        if isinstance(chat_template, str) and renders_content_parts(chat_template):
            return [as_content_parts(m) for m in parsed.messages]
        if parsed.images:
            return flatten_image_content(parsed.messages, self.placeholder)
        return parsed.messages

    def load(self, parsed: ParsedChat) -> list[Any]:
        return load_images(parsed.images, self.connector)

    async def load_async(self, parsed: ParsedChat) -> list[Any]:
        return await load_images_async(parsed.images, self.connector)


__all__ = [
    "ChatImagePolicy", "ContentPartError", "as_content_parts", "ImageLimitError", "ImageRef", "ParsedChat", "check_image_limit",
    "flatten_image_content", "load_images", "load_images_async", "parse_chat_content", "renders_content_parts",
]
