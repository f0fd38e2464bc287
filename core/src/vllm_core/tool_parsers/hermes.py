"""Hermes / Qwen format: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` per call."""

from __future__ import annotations

import json
import re
from typing import ClassVar

from vllm_core.tool_parsers.abstract import ParsedToolCall, ToolParser, make_call

_CLOSED = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


class HermesToolParser(ToolParser):
    start_markers: ClassVar[tuple[str, ...]] = ("<tool_call>",)

    def parse(self, text: str, final: bool) -> tuple[str | None, list[ParsedToolCall]]:
        start = text.find("<tool_call>")
        if start == -1:
            return text, []
        bodies = [m.group(1) for m in _CLOSED.finditer(text)]
        tail = text[text.rfind("</tool_call>") + len("</tool_call>"):] if bodies else text[start:]
        if final and "<tool_call>" in tail:
            bodies.append(tail.split("<tool_call>", 1)[1])  # the model stopped before closing the last call
        calls = []
        for body in bodies:
            obj = json.loads(body.strip())
            if not isinstance(obj, dict):
                raise ValueError(f"a hermes tool call must be a JSON object, got {body!r}")
            calls.append(make_call(obj.get("name"), obj.get("arguments", obj.get("parameters"))))
        return text[:start], calls
