"""Llama 3.x JSON format: the reply *is* the call(s), ``{"name": ..., "parameters": {...}}``,
several separated by ``;``, optionally after ``<|python_tag|>``."""

from __future__ import annotations

import json
from typing import ClassVar

from vllm_core.tool_parsers.abstract import ParsedToolCall, ToolParser, make_call

PYTHON_TAG = "<|python_tag|>"


def decode_objects(text: str, final: bool, separators: str = " \t\r\n;,") -> list[dict[str, object]]:
    """JSON objects one after another; an incomplete last one is dropped (or raises when final)."""
    decoder = json.JSONDecoder()
    objs: list[dict[str, object]] = []
    i = 0
    while True:
        while i < len(text) and text[i] in separators:
            i += 1
        if i >= len(text):
            return objs
        try:
            obj, i = decoder.raw_decode(text, i)
        except ValueError:
            if final:
                raise
            return objs
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, got {obj!r}")
        objs.append(obj)


class Llama3JsonToolParser(ToolParser):
    start_markers: ClassVar[tuple[str, ...]] = (PYTHON_TAG, "{")

    def find_start(self, text: str) -> int:
        stripped = text.lstrip()
        if stripped.startswith(PYTHON_TAG) or stripped.startswith("{"):
            return len(text) - len(stripped)
        return -1

    def partial_marker_len(self, text: str) -> int:
        stripped = text.lstrip()
        return len(text) if PYTHON_TAG.startswith(stripped) else 0

    def parse(self, text: str, final: bool) -> tuple[str | None, list[ParsedToolCall]]:
        start = self.find_start(text)
        if start == -1:
            return text, []
        body = text[start:].removeprefix(PYTHON_TAG)
        objs = decode_objects(body, final)
        return None, [make_call(o.get("name"), o.get("parameters", o.get("arguments"))) for o in objs]
