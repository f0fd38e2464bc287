"""Qwen2-VL's front end (placeholder until implemented)."""

from __future__ import annotations

from vllm_core.plugins.api import MultiModalProcessor


class Qwen2VLProcessor(MultiModalProcessor):
    pass
