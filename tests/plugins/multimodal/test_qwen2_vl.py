"""Qwen2-VL end to end: dynamic resolution (images of different sizes take different token
counts), M-RoPE positions through the runner and the platforms' rotary op; greedy ids equal
transformers' generate alone, mixed with text-only requests, several images per prompt, with
chunked prefill cutting image spans and prefix caching on."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import installed_platforms

from .tiny_models import draw, hf_generate, qwen2_vl_inputs

DEVICES = [d for d in installed_platforms() if d in ("reference", "cpu", "cuda")]
MAX_TOKENS = 8
IMG = "<|vision_start|><|image_pad|><|vision_end|>"

CASES: dict[str, tuple[str, list[tuple[int, int, int]]]] = {
    "wide": (f"User: {IMG}What is shown? Assistant:", [(40, 24, 1)]),
    "tall": (f"User: {IMG}What is shown? Assistant:", [(24, 44, 2)]),
    "two": (f"User: {IMG} and {IMG} Which differs? Assistant:", [(32, 32, 3), (40, 24, 1)]),
    "text": ("User: Tell me a story about a cat. Assistant:", []),
}


def _images(name: str) -> list[Any]:
    return [draw(*s) for s in CASES[name][1]]


@pytest.fixture(scope="module")
def oracle(tiny_qwen2_vl: tuple[str, Any, Any], mm_tokenizer: Any) -> dict[str, tuple[list[int], list[int]]]:
    _, model, image_processor = tiny_qwen2_vl
    out = {}
    for name, (text, _) in CASES.items():
        inputs = qwen2_vl_inputs(image_processor, mm_tokenizer, text, _images(name))
        out[name] = (inputs["input_ids"][0].tolist(), hf_generate(model, inputs, MAX_TOKENS))
    return out


def _run(llm: Any, names: list[str]) -> list[Any]:
    from vllm_core import SamplingParams

    prompts: list[dict[str, Any]] = []
    for n in names:
        images = _images(n)
        prompts.append({"prompt": CASES[n][0], **({"multi_modal_data": {"image": images}} if images else {})})
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    return llm.generate(prompts, params, use_tqdm=False)  # type: ignore[no-any-return]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("chunk", [None, 9])
def test_qwen2_vl_matches_transformers(device: str, chunk: int | None, tiny_qwen2_vl: tuple[str, Any, Any],
                                       oracle: dict[str, tuple[list[int], list[int]]]) -> None:
    from vllm_core import LLM

    llm = LLM(tiny_qwen2_vl[0], device=device, dtype="float32", max_model_len=256, block_size=16,
              limit_mm_per_prompt={"image": 2}, max_num_batched_tokens=chunk, enable_prefix_caching=True,
              use_tqdm_on_load=False)
    (alone,) = _run(llm, ["wide"])
    assert alone.prompt_token_ids == oracle["wide"][0]
    assert list(alone.outputs[0].token_ids) == oracle["wide"][1]
    names = ["text", "two", "tall", "wide"]  # "wide" again: a prefix-cache hit, same tokens
    for name, out in zip(names, _run(llm, names)):
        assert out.prompt_token_ids == oracle[name][0], name
        assert list(out.outputs[0].token_ids) == oracle[name][1], name
    assert oracle["wide"][1] != oracle["tall"][1]
    assert len(oracle["wide"][0]) != len(oracle["tall"][0])  # dynamic resolution
    assert llm.llm_engine.core.kv_cache_manager.prefix_hits > 0
    runner = llm.llm_engine.core.runner.extensions.get("multimodal")
    assert runner.cache.encoder_runs == 3  # "wide"'s image again (and in "two"): from the cache
