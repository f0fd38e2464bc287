"""Llama 3.x JSON format: ``{"name": ..., "parameters": {...}}`` calls, several separated by
``;``, optionally after ``<|python_tag|>``. As vLLM reads it, the calls may also sit inside prose
or be followed by text (``{call} I used {searchTool}``): every object with a name and
parameters (or arguments) is a call; other objects are prose."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from vllm_core.tool_parsers.abstract import ParsedToolCall, ToolParser, json_call, json_partial_call

PYTHON_TAG = "<|python_tag|>"
_SEPARATORS = " \t\r\n;,"


def decode_objects(text: str, final: bool, separators: str = _SEPARATORS) -> list[dict[str, object]]:
    """JSON objects one after another; an incomplete last one is dropped (or raises when final)."""
    return [obj for obj, _ in _objects_with_text(text, final, separators)]


def _objects_with_text(text: str, final: bool, separators: str = _SEPARATORS) -> list[tuple[Any, str]]:
    decoder = json.JSONDecoder()
    objs: list[tuple[Any, str]] = []
    i = 0
    while True:
        while i < len(text) and text[i] in separators:
            i += 1
        if i >= len(text):
            return objs
        try:
            obj, end = decoder.raw_decode(text, i)
        except ValueError:
            if final:
                raise
            return objs
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, got {obj!r}")
        objs.append((obj, text[i:end]))
        i = end


def _remainder(body: str) -> str:
    """The text after the complete objects at the start of ``body``."""
    decoder = json.JSONDecoder()
    i = 0
    while True:
        while i < len(body) and body[i] in _SEPARATORS:
            i += 1
        try:
            _, i = decoder.raw_decode(body, i)
        except ValueError:
            return body[i:]


def calls_in_text(text: str) -> list[ParsedToolCall]:
    """Every ``{"name", "parameters"|"arguments"}`` object anywhere in ``text``, in order."""
    decoder = json.JSONDecoder()
    calls = []
    i = text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
            call = json_call(obj, text[i:end])
        except ValueError:
            i = text.find("{", i + 1)
            continue
        calls.append(call)
        i = text.find("{", end)
    return calls


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
        if final:
            return None, calls_in_text(text.replace(PYTHON_TAG, " "))
        start = self.find_start(text)
        if start == -1:
            return text, []
        body = text[start:].removeprefix(PYTHON_TAG)
        return None, [json_call(obj, raw) for obj, raw in _objects_with_text(body, final)]

    def partial_call(self, text: str) -> tuple[str, str] | None:
        start = self.find_start(text)
        if start == -1:
            return None
        return json_partial_call(_remainder(text[start:].removeprefix(PYTHON_TAG)))
