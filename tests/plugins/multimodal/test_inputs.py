"""Multimodal input errors (each a ``MultiModalInputError``, a ``ValueError``: the server answers
400) and the engine keeps serving; content hashes; a text-only engine imports no image code."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from .tiny_models import draw

ASK = "USER: <image>\nWhat is shown? ASSISTANT:"


@pytest.fixture(scope="module")
def llava_llm(tiny_llava: tuple[str, Any, Any]) -> Any:
    from vllm_core import LLM

    return LLM(tiny_llava[0], device="reference", dtype="float32", max_model_len=256, use_tqdm_on_load=False)


def _generate(llm: Any, prompt: Any) -> Any:
    from vllm_core import SamplingParams

    return llm.generate(prompt, SamplingParams(max_tokens=2, temperature=0.0), use_tqdm=False)


def test_default_limit_is_one_image(llava_llm: Any) -> None:
    from vllm_core.multimodal import MultiModalInputError

    two = {"prompt": "USER: <image> <image> ASSISTANT:", "multi_modal_data": {"image": [draw(30, 30, 1), draw(30, 30, 2)]}}
    with pytest.raises(MultiModalInputError) as err:
        _generate(llava_llm, two)
    msg = str(err.value)
    assert "2 images" in msg and "at most 1" in msg and "limit_mm_per_prompt={'image': 2}" in msg
    assert isinstance(err.value, ValueError)
    (out,) = _generate(llava_llm, {"prompt": ASK, "multi_modal_data": {"image": draw(30, 30, 1)}})  # still serving
    assert len(out.outputs[0].token_ids) == 2


@pytest.mark.parametrize("data, words", [
    ({"image": [draw(20, 20, 1)] * 2}, ["2 images", "limit"]),  # limit 1 (default) in this engine
    ({"audio": b"\0\0"}, ["'audio'", "takes: image"]),
    ({"image": "not an image"}, ["str", "PIL.Image"]),
    ("image", ["must be a dict"]),
])
def test_bad_multi_modal_data(llava_llm: Any, data: Any, words: list[str]) -> None:
    from vllm_core.multimodal import MultiModalInputError

    with pytest.raises(MultiModalInputError) as err:
        _generate(llava_llm, {"prompt": ASK, "multi_modal_data": data})
    for w in words:
        assert w in str(err.value)


def test_placeholder_count_must_match(llava_llm: Any) -> None:
    from vllm_core.multimodal import MultiModalInputError

    with pytest.raises(MultiModalInputError, match="0 image placeholder.*'<image>'"):
        _generate(llava_llm, {"prompt": "USER: What? ASSISTANT:", "multi_modal_data": {"image": draw(20, 20, 1)}})


def test_text_only_model_refuses_images(smol_vocab_model: str) -> None:
    from vllm_core import LLM
    from vllm_core.multimodal import MultiModalInputError, processor_for

    llm = LLM(smol_vocab_model, device="reference", dtype="float32", max_model_len=128, use_tqdm_on_load=False)
    assert processor_for(smol_vocab_model) is None
    with pytest.raises(MultiModalInputError, match="text-only model and takes no images"):
        _generate(llm, {"prompt": "Hi <image>", "multi_modal_data": {"image": draw(20, 20, 1)}})
    assert _generate(llm, "Hi")[0].outputs[0].token_ids


def test_processor_for_answers_the_placeholder(tiny_llava: tuple[str, Any, Any], tiny_qwen2_vl: tuple[str, Any, Any]) -> None:
    from vllm_core.multimodal import processor_for

    llava = processor_for(tiny_llava[0])
    assert llava is not None and llava.placeholder_text("image") == "<image>"
    qwen = processor_for(tiny_qwen2_vl[0])
    assert qwen is not None and qwen.placeholder_text("image") == "<|vision_start|><|image_pad|><|vision_end|>"


def test_content_hash_reads_pixels() -> None:
    from vllm_core.multimodal import hash_item

    a, same, other = draw(30, 20, 5), draw(30, 20, 5), draw(30, 20, 6)
    assert hash_item("image", a) == hash_item("image", same)
    assert hash_item("image", a) != hash_item("image", other)
    assert hash_item("image", a) != hash_item("image", a.convert("L"))


def test_text_only_engine_imports_no_image_code(smol_vocab_model: str) -> None:
    # (PIL itself is imported by transformers for any model; vllm_core.multimodal never imports it)
    bare = subprocess.run([sys.executable, "-c", "import sys, vllm_core.multimodal; assert 'PIL' not in sys.modules"],
                          capture_output=True, text=True, timeout=60)
    assert bare.returncode == 0, bare.stderr[-2000:]
    code = (
        "import sys; from vllm_core import LLM, SamplingParams\n"
        f"llm = LLM({smol_vocab_model!r}, device='reference', dtype='float32', max_model_len=64, use_tqdm_on_load=False)\n"
        "llm.generate('Hi', SamplingParams(max_tokens=2), use_tqdm=False)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision' or "
        "m.startswith(('vllm_multimodal.processors', 'vllm_multimodal.models')))\n"
        "print(bad); assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-500:]
