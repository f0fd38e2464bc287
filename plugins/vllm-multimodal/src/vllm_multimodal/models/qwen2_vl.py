"""Qwen2-VL (placeholder until implemented)."""

from __future__ import annotations

from vllm_multimodal.models.base import VisionLanguageModel


class Qwen2VLForConditionalGeneration(VisionLanguageModel):
    pass
