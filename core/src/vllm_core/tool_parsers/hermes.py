"""Hermes / Qwen format: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` per call.

Arguments may also be a JSON string (serialized once more by the model: decoded) or a bare string
(sent as a JSON string), as vLLM reads them."""

from __future__ import annotations

import re
from typing import ClassVar

from vllm_core.tool_parsers.abstract import ParsedToolCall, ToolParser, json_call, json_partial_call, strict_json

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_CLOSED = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


class HermesToolParser(ToolParser):
    start_markers: ClassVar[tuple[str, ...]] = (OPEN,)

    def parse(self, text: str, final: bool) -> tuple[str | None, list[ParsedToolCall]]:
        start = text.find(OPEN)
        if start == -1:
            return text, []
        bodies = [m.group(1) for m in _CLOSED.finditer(text)]
        tail = text[text.rfind(CLOSE) + len(CLOSE):] if bodies else text[start:]
        if final and OPEN in tail:
            bodies.append(tail.split(OPEN, 1)[1])  # the model stopped before closing the last call
        return text[:start], [json_call(strict_json(body.strip()), body) for body in bodies]

    def partial_call(self, text: str) -> tuple[str, str] | None:
        last = text.rfind(OPEN)
        if last == -1 or CLOSE in text[last:]:
            return None
        return json_partial_call(text[last + len(OPEN):])
