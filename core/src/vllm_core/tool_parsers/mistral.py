"""Mistral format: ``[TOOL_CALLS]`` then a JSON list of ``{"name", "arguments"}`` objects, or
(newer tokenizers) ``name{arguments}`` pairs. Text after the calls is content (the marker never
leaks into it)."""

from __future__ import annotations

import json
import re
from typing import ClassVar

from vllm_core.tool_parsers.abstract import ParsedToolCall, ToolParser, json_call, json_partial_call, make_call
from vllm_core.tool_parsers.llama3_json import _objects_with_text, _remainder

BOT = "[TOOL_CALLS]"
_NAME = re.compile(r"\s*([A-Za-z_][\w.\-]*)\s*(?=\{)")


class MistralToolParser(ToolParser):
    start_markers: ClassVar[tuple[str, ...]] = (BOT,)
    needs_special_tokens: ClassVar[bool] = True

    def parse(self, text: str, final: bool) -> tuple[str | None, list[ParsedToolCall]]:
        start = text.find(BOT)
        if start == -1:
            return text, []
        content = text[:start]
        calls: list[ParsedToolCall] = []
        for section in text[start:].split(BOT)[1:]:
            body = section.strip()
            if body.startswith("["):
                found, trailing = self._json_list(body, final)
            else:
                found, trailing = self._name_args(body, final)
            calls += found
            content += trailing
        return content, calls

    @staticmethod
    def _json_list(body: str, final: bool) -> tuple[list[ParsedToolCall], str]:
        try:
            items, end = json.JSONDecoder().raw_decode(body)
        except ValueError:  # not closed (yet): the complete objects so far
            objs = _objects_with_text(body[1:], final)
            return [json_call(obj, raw) for obj, raw in objs], ""
        if not isinstance(items, list):
            raise ValueError(f"[TOOL_CALLS] must be followed by a list of calls, got {items!r}")
        objs = _objects_with_text(body[1:end - 1], True)
        return [json_call(obj, raw) for obj, raw in objs], body[end:].lstrip()

    @staticmethod
    def _name_args(body: str, final: bool) -> tuple[list[ParsedToolCall], str]:
        decoder = json.JSONDecoder()
        calls: list[ParsedToolCall] = []
        i = 0
        while i < len(body):
            m = _NAME.match(body, i)
            if m is None:
                if calls:
                    return calls, body[i:]  # text after the calls
                if final and body[i:].strip():
                    raise ValueError(f"cannot read a mistral tool call from {body[i:]!r}")
                break
            try:
                args, end = decoder.raw_decode(body, m.end())
            except ValueError:
                if final:
                    raise
                break
            calls.append(make_call(m.group(1), args, body[m.end():end] if isinstance(args, dict) else None))
            i = end
            while i < len(body) and body[i] in " \t\r\n,":
                i += 1
        return calls, ""

    def partial_call(self, text: str) -> tuple[str, str] | None:
        start = text.rfind(BOT)
        if start == -1:
            return None
        body = text[start + len(BOT):].lstrip()
        if not body.startswith("["):
            return None
        return json_partial_call(_remainder(body[1:]))
