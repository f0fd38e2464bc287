"""Chat content parts (``vllm_core.multimodal.content_parts``): OpenAI and Anthropic shapes ->
template messages and ordered image references; limits; errors that name the part."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from tests.conftest import import_or_require
from tests.server.media_http import png_bytes
from vllm_core.multimodal.content_parts import (
    ContentPartError,
    ImageLimitError,
    ImageRef,
    load_images,
    load_images_async,
    parse_chat_content,
)
from vllm_core.multimodal.media import MediaConnector, MediaError


def data_url(raw: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(raw).decode()}"


def test_text_only_messages_stay_plain_strings() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {"role": "assistant", "content": None, "tool_calls": []},
    ]
    parsed = parse_chat_content(messages)
    assert parsed.images == []
    assert parsed.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one\ntwo"},
        {"role": "assistant", "content": "", "tool_calls": []},
    ]
    assert messages[1]["content"][0] == {"type": "text", "text": "one"}  # the input is not modified


def test_openai_image_parts_in_order() -> None:
    messages = [
        {"role": "user", "content": [
            {"type": "text", "text": "Compare"},
            {"type": "image_url", "image_url": {"url": "http://127.0.0.1/a.png", "detail": "low"}},
            {"type": "image_url", "image_url": "file:///tmp/b.png"},  # vLLM also takes the URL as a string
        ]},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
    ]
    parsed = parse_chat_content(messages)
    assert parsed.messages[0]["content"] == [{"type": "text", "text": "Compare"}, {"type": "image"}, {"type": "image"}]
    assert parsed.messages[1]["content"] == "ok"
    assert parsed.messages[2]["content"] == [{"type": "image"}]
    assert parsed.images == [
        ImageRef("messages[0].content[1]", url="http://127.0.0.1/a.png"),
        ImageRef("messages[0].content[2]", url="file:///tmp/b.png"),
        ImageRef("messages[2].content[0]", url="data:image/png;base64,AAAA"),
    ]
    assert parsed.image_parts == "messages[0].content[1], messages[0].content[2], messages[2].content[0]"


def test_anthropic_image_blocks() -> None:
    messages = [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.test/cat.png"}},
        {"type": "text", "text": "What are these?"},
    ]}]
    parsed = parse_chat_content(messages, labels=["messages[3]"])
    assert parsed.messages[0]["content"] == [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "What are these?"}]
    assert [(r.where, r.url) for r in parsed.images] == [
        ("messages[3].content[0]", "data:image/jpeg;base64,QUJD"),
        ("messages[3].content[1]", "https://example.test/cat.png"),
    ]


@pytest.mark.parametrize("part, needle", [
    ({"type": "image_url"}, "needs image_url.url"),
    ({"type": "image_url", "image_url": {"url": ""}}, "needs image_url.url"),
    ({"type": "image_url", "image_url": {"url": "http://x/a.png", "detail": "max"}}, "'max' is not one of auto"),
    ({"type": "image_pil", "image_pil": "not an image"}, "PIL.Image.Image, got str"),
    ({"type": "image"}, "needs a source"),
    ({"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": "AA"}}, "'image/tiff'"),
    ({"type": "image", "source": {"type": "base64", "media_type": "image/png"}}, "source.data"),
    ({"type": "image", "source": {"type": "url"}}, "source.url"),
    ({"type": "image", "source": {"type": "file", "file_id": "f"}}, "'file' is not one of base64, url"),
    ({"type": "text", "text": 3}, "a text part needs text"),
    ({"type": "input_audio", "input_audio": {}}, "'input_audio' is not supported"),
    ("just a string", "None is not supported"),
])
def test_bad_parts_name_the_part(part: Any, needle: str) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]
    with pytest.raises(ContentPartError) as info:
        parse_chat_content(messages)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith("messages[0].content[1]: ") and needle in str(info.value), str(info.value)
    assert info.value.param == "messages[0].content[1]"


def test_content_of_the_wrong_type() -> None:
    with pytest.raises(ContentPartError, match=r"messages\[0\]\.content must be a string or a list"):
        parse_chat_content([{"role": "user", "content": 42}])


def test_image_limit_counts_the_whole_conversation() -> None:
    img = {"type": "image_url", "image_url": {"url": "http://127.0.0.1/a.png"}}
    messages = [{"role": "user", "content": [img]}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "text", "text": "and"}, img, img]}]
    assert len(parse_chat_content(messages, {"image": 3}).images) == 3
    assert len(parse_chat_content(messages, {"video": 0}).images) == 3  # no image limit given
    with pytest.raises(ImageLimitError) as info:
        parse_chat_content(messages, {"image": 2})
    message = str(info.value)
    assert "3 images in one prompt, more than the limit of 2" in message and "--limit-mm-per-prompt" in message
    assert info.value.param == "messages[2].content[2]"  # the first part past the limit
    with pytest.raises(ImageLimitError, match="more than the limit of 0"):
        parse_chat_content(messages[:1], {"image": 0})


def test_load_images_in_order_sync_and_async() -> None:
    Image = import_or_require("PIL.Image", "pillow")
    given = Image.new("RGBA", (2, 3), (1, 2, 3, 4))
    messages = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(png_bytes((4, 4), (10, 20, 30)))}},
        {"type": "image_pil", "image_pil": given},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": base64.b64encode(png_bytes((6, 2), (7, 8, 9))).decode()}},
    ]}]
    parsed = parse_chat_content(messages)
    connector = MediaConnector.create()
    for images in (load_images(parsed.images, connector), asyncio.run(load_images_async(parsed.images, connector))):
        assert [im.size for im in images] == [(4, 4), (2, 3), (6, 2)]
        assert all(im.mode == "RGB" for im in images)  # the RGBA image_pil is converted, as vLLM does
        assert images[0].getpixel((0, 0)) == (10, 20, 30) and images[2].getpixel((0, 0)) == (7, 8, 9)


def test_load_errors_name_the_part() -> None:
    import_or_require("PIL.Image", "pillow")
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "x"},
        {"type": "image_url", "image_url": {"url": data_url(b"not a png")}},
    ]}]
    parsed = parse_chat_content(messages)
    with pytest.raises(MediaError, match=r"^messages\[0\]\.content\[1\]: .*not an image Pillow can decode"):
        load_images(parsed.images, MediaConnector.create())


LLAVA_TEMPLATE = ("{% for message in messages %}{{ message['role'].upper() + ': ' }}{% for content in message['content'] "
                  "| selectattr('type', 'equalto', 'image') %}{{ '<image>\\n' }}{% endfor %}{% for content in "
                  "message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}{% endfor %}"
                  "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}")


def test_template_content_format() -> None:
    from vllm_core.multimodal.content_parts import renders_content_parts

    assert renders_content_parts(LLAVA_TEMPLATE)  # llava-hf's processor template
    assert renders_content_parts("{%- for item in message.content %}{{ item.text }}{% endfor %}")
    assert renders_content_parts('{% for c in messages[0]["content"] %}{% endfor %}')
    assert not renders_content_parts(CHATML)  # SmolLM2's: content rendered as one string
    assert not renders_content_parts("{% for message in messages %}{{ message.content }}{% endfor %}")


def test_flatten_for_string_templates() -> None:
    from vllm_core.multimodal.content_parts import flatten_image_content

    messages = [{"role": "system", "content": "s"},
                {"role": "user", "content": [{"type": "text", "text": "What is it?"}, {"type": "image"}]},
                {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "a"},
                                             {"type": "text", "text": "b"}]},
                {"role": "user", "content": [{"type": "text", "text": "<image> then <image>?"}, {"type": "image"},
                                             {"type": "image"}]},
                {"role": "user", "content": [{"type": "image"}]}]
    assert [m["content"] for m in flatten_image_content(messages, "<image>")] == [
        "s", "<image>\nWhat is it?", "<image>\n<image>\na\nb", "<image> then <image>?", "<image>\n"]


def test_policy_refuses_before_loading() -> None:
    from vllm_core.multimodal import MultiModalInputError
    from vllm_core.multimodal.content_parts import ChatImagePolicy

    connector = MediaConnector.create()
    messages = [{"role": "user", "content": [{"type": "text", "text": "x"},
                                             {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/a.png"}},
                                             {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/b.png"}}]}]
    text_only = ChatImagePolicy(connector, None, {"image": 4}, "tiny")
    with pytest.raises(MultiModalInputError, match=r"^messages\[0\]\.content\[1\], messages\[0\]\.content\[2\]: the "
                                                   r"model 'tiny' is text-only") as info:
        text_only.parse(messages)
    assert info.value.param == "messages[0].content[1]"  # type: ignore[attr-defined]
    assert text_only.parse([{"role": "user", "content": [{"type": "text", "text": "x"}]}]).messages[0]["content"] == "x"
    one = ChatImagePolicy(connector, "<image>", {}, "llava")  # no limit named: the engine's default of one
    with pytest.raises(ImageLimitError, match="2 images in one prompt, more than the limit of 1"):
        one.parse(messages)
    two = ChatImagePolicy(connector, "<image>", {"image": 2}, "llava")
    parsed = two.parse(messages)
    assert two.template_messages(parsed, CHATML)[0]["content"] == "<image>\n<image>\nx"
    assert two.template_messages(parsed, LLAVA_TEMPLATE) == [{"role": "user", "content": [
        {"type": "text", "text": "x"}, {"type": "image"}, {"type": "image"}]}]
    # a vision-language model's parts template: text-only messages become one text part each
    text = parse_chat_content([{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}])
    assert two.template_messages(text, LLAVA_TEMPLATE) == [
        {"role": "system", "content": [{"type": "text", "text": "s"}]},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert two.template_messages(text, CHATML) == text.messages
    assert text_only.template_messages(text, LLAVA_TEMPLATE) == text.messages  # text models: untouched
    assert two.template_messages(text, {"default": CHATML}) == text.messages  # a dict of named templates
