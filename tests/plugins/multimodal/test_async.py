"""The server's path: ``AsyncLLM`` (engine core in its own process; the images' tensors and
placeholder state cross with the request) gives the offline result, and a refused prompt is a
``MultiModalInputError`` while the engine keeps serving."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .tiny_models import draw, hf_generate

ASK = "USER: <image>\nWhat is shown? ASSISTANT:"


def test_async_llm_with_images(tiny_llava: tuple[str, Any, Any]) -> None:
    from vllm_core import SamplingParams
    from vllm_core.engine.async_llm import AsyncLLM
    from vllm_core.entrypoints.llm import build_engine_config
    from vllm_core.multimodal import MultiModalInputError

    path, model, processor = tiny_llava
    img = draw(50, 80, 31)
    expected = hf_generate(model, dict(processor(text=ASK, images=img, return_tensors="pt")), 6)
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)

    async def main() -> list[int]:
        engine = await AsyncLLM.create(build_engine_config(
            path, device="reference", dtype="float32", max_model_len=256, limit_mm_per_prompt={"image": 1}))
        try:
            with pytest.raises(MultiModalInputError, match="at most 1 image"):
                async for _ in engine.generate({"prompt": ASK, "multi_modal_data": {"image": [img, img]}}, params):
                    pass
            last = None
            async for out in engine.generate({"prompt": ASK, "multi_modal_data": {"image": img}}, params):
                last = out
            assert last is not None
            return list(last.outputs[0].token_ids)
        finally:
            await engine.shutdown()

    assert asyncio.run(main()) == expected
