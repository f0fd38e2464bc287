"""DeepSeek-R1 style: ``<think>reasoning</think>answer`` (the opening tag may come from the template)."""

from __future__ import annotations

from vllm_core.reasoning.abstract import ReasoningParser


class DeepSeekR1ReasoningParser(ReasoningParser):
    start_token = "<think>"
    end_token = "</think>"
