"""Shared by the image benchmarks: random images, token-id prompts with one image placeholder,
and the engine's encoder counters."""

from __future__ import annotations

import random
from typing import Any

IMAGE_TOKEN = 32000
"""``image_token_index`` of the LLaVA configs in benchmarks/configs."""


def random_image(size: int, seed: int) -> Any:
    """A noise image (every request's own: no encoder-cache or prefix-cache hits)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def image_prompts(n: int, text_range: tuple[int, int], vocab: int, size: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` prompts ``[BOS] <image> text...`` as token ids with one image each."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = [rng.randrange(3, min(vocab, IMAGE_TOKEN)) for _ in range(rng.randint(*text_range))]
        out.append({"prompt_token_ids": [1, IMAGE_TOKEN, *text], "multi_modal_data": {"image": random_image(size, seed * 100003 + i)}})
    return out


def text_twins(prompts: list[dict[str, Any]], image_tokens: int, vocab: int, seed: int = 1) -> list[dict[str, Any]]:
    """The same prompts with each image replaced by ``image_tokens`` random text tokens (the
    image's tokens counted as prompt): the text-only baseline of the same run."""
    rng = random.Random(seed)
    return [{"prompt_token_ids": [p["prompt_token_ids"][0]] + [rng.randrange(3, IMAGE_TOKEN) for _ in range(image_tokens)]
             + p["prompt_token_ids"][2:]} for p in prompts]


def encoder_stats(llm: Any) -> tuple[int, float]:
    """(images encoded, seconds in the encoder while timed) of an engine run in this process."""
    ext = llm.llm_engine.core.runner.extensions.get("multimodal")
    return ext.cache.encoder_runs, ext.cache.encoder_seconds


def time_encoder(llm: Any, on: bool) -> None:
    """Make the engine wait for each encoder batch and time it (a device sync per batch)."""
    llm.llm_engine.core.runner.extensions.get("multimodal").time_encoder = on
