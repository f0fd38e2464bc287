"""LLaVA-1.5 end to end: greedy ids equal transformers' generate on the same processor outputs,
alone, in a batch with text-only requests, with several images per prompt, with chunked prefill
cutting image spans, with prefix caching; the encoder cache and the block-hash keys."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import installed_platforms

from .tiny_models import draw, hf_generate

DEVICES = [d for d in installed_platforms() if d in ("reference", "cpu", "cuda")]
MAX_TOKENS = 8
ASK = "USER: <image>\nWhat is shown? ASSISTANT:"

CASES: dict[str, tuple[str, list[tuple[int, int, int]]]] = {
    # name: (prompt, images as (width, height, seed))
    "wide": (ASK, [(80, 50, 1)]),
    "tall": (ASK, [(40, 90, 2)]),  # same text, another image
    "two": ("USER: <image> and <image>\nWhich differs? ASSISTANT:", [(64, 64, 3), (80, 50, 1)]),
    "text": ("USER: Tell me a story about a cat. ASSISTANT:", []),
}


def _prompt(name: str) -> dict[str, Any]:
    text, specs = CASES[name]
    prompt: dict[str, Any] = {"prompt": text}
    if specs:
        images = [draw(*s) for s in specs]
        prompt["multi_modal_data"] = {"image": images if len(images) > 1 else images[0]}
    return prompt


@pytest.fixture(scope="module")
def oracle(tiny_llava: tuple[str, Any, Any]) -> dict[str, tuple[list[int], list[int]]]:
    """name -> (HF processor's input ids, transformers' greedy tokens)."""
    _, model, processor = tiny_llava
    out = {}
    for name, (text, specs) in CASES.items():
        images = [draw(*s) for s in specs] or None
        inputs = dict(processor(text=text, images=images, return_tensors="pt"))
        out[name] = (inputs["input_ids"][0].tolist(), hf_generate(model, inputs, MAX_TOKENS))
    return out


def _llm(path: str, device: str, **kwargs: Any) -> Any:
    from vllm_core import LLM

    return LLM(path, device=device, dtype="float32", max_model_len=256, block_size=16,
               limit_mm_per_prompt={"image": 2}, use_tqdm_on_load=False, **kwargs)


def _run(llm: Any, names: list[str]) -> list[Any]:
    return _run_prompts(llm, [_prompt(n) for n in names])


def _run_prompts(llm: Any, prompts: list[dict[str, Any]]) -> list[Any]:
    from vllm_core import SamplingParams

    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    return llm.generate(prompts, params, use_tqdm=False)  # type: ignore[no-any-return]


def _runner(llm: Any) -> Any:
    return llm.llm_engine.core.runner.extensions.get("multimodal")


@pytest.fixture(scope="module", params=DEVICES)
def llava(request: pytest.FixtureRequest, tiny_llava: tuple[str, Any, Any]) -> Any:
    return _llm(tiny_llava[0], request.param)


def test_alone_then_mixed_batch(llava: Any, oracle: dict[str, tuple[list[int], list[int]]]) -> None:
    (alone,) = _run(llava, ["wide"])
    assert alone.prompt_token_ids == oracle["wide"][0]  # placeholder expansion = the HF processor's
    assert list(alone.outputs[0].token_ids) == oracle["wide"][1]
    names = ["text", "tall", "two", "wide", "text"]
    outs = _run(llava, names)
    for name, out in zip(names, outs):
        assert out.prompt_token_ids == oracle[name][0], name
        assert list(out.outputs[0].token_ids) == oracle[name][1], name
    # the image decides the tokens: same text, different images, different output
    assert oracle["wide"][1] != oracle["tall"][1]
    # the token-id form: one placeholder id per image, expanded by the engine
    ids = llava.get_tokenizer().encode(ASK)
    (by_ids,) = _run_prompts(llava, [{"prompt_token_ids": ids, "multi_modal_data": _prompt("wide")["multi_modal_data"]}])
    assert by_ids.prompt_token_ids == oracle["wide"][0]
    assert list(by_ids.outputs[0].token_ids) == oracle["wide"][1]


@pytest.mark.parametrize("device", DEVICES)
def test_chunked_prefill_cuts_image_spans(device: str, tiny_llava: tuple[str, Any, Any], oracle: dict[str, Any]) -> None:
    # 7-token steps: every image span (16 tokens at offset 6) is cut into 3 chunks
    llm = _llm(tiny_llava[0], device, max_num_batched_tokens=7, enable_chunked_prefill=True)
    names = ["two", "wide", "text", "tall"]
    for name, out in zip(names, _run(llm, names)):
        assert list(out.outputs[0].token_ids) == oracle[name][1], name
    runner = _runner(llm)
    assert runner.cache.encoder_runs == 3  # three distinct images: "wide"'s is also "two"'s second
    assert runner.cache.hits > 0  # later chunks of a span read the cache


def test_same_image_twice_one_encoder_run(llava: Any) -> None:
    from vllm_core import SamplingParams

    runner = _runner(llava)
    before = runner.cache.encoder_runs
    img = draw(70, 70, 99)
    prompts = [{"prompt": ASK, "multi_modal_data": {"image": img}},
               {"prompt": "USER: <image>\nDescribe it. ASSISTANT:", "multi_modal_data": {"image": draw(70, 70, 99)}}]
    llava.generate(prompts, SamplingParams(max_tokens=2, temperature=0.0), use_tqdm=False)
    assert runner.cache.encoder_runs - before == 1


SYSTEM = ("SYSTEM: You are a careful assistant. You describe pictures in plain words, one short sentence "
          "at a time, and you never guess. ")


def test_prefix_cache_keys_on_the_image(llava: Any, tiny_llava: tuple[str, Any, Any]) -> None:
    from vllm_core import SamplingParams

    _, model, processor = tiny_llava
    kv = llava.llm_engine.core.kv_cache_manager
    first, second = draw(60, 45, 21), draw(45, 60, 22)  # images no other test sends
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    text = SYSTEM + ASK

    def run(img: Any) -> tuple[list[int], int]:
        (out,) = llava.generate({"prompt": text, "multi_modal_data": {"image": img}}, params, use_tqdm=False)
        expected = hf_generate(model, dict(processor(text=text, images=img, return_tensors="pt")), MAX_TOKENS)
        assert list(out.outputs[0].token_ids) == expected
        return expected, out.prompt_token_ids.index(model.config.image_token_index)

    a, offset = run(first)
    assert offset >= 32  # the system prompt fills two blocks of 16 before the image
    hits = kv.prefix_hits
    b, _ = run(second)  # same text, another image: only the blocks before the image are shared
    assert kv.prefix_hits - hits == offset // 16 * 16
    assert a != b
    hits = kv.prefix_hits
    run(first)  # same text and image: every full block but the last hits
    assert kv.prefix_hits - hits > offset // 16 * 16
