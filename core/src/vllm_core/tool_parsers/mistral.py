"""Mistral format: ``[TOOL_CALLS]`` then a JSON list of ``{"name", "arguments"}`` objects, or
(newer tokenizers) ``name{arguments}`` pairs."""

from __future__ import annotations

import json
import re
from typing import ClassVar

from vllm_core.tool_parsers.abstract import ParsedToolCall, ToolParser, make_call
from vllm_core.tool_parsers.llama3_json import decode_objects

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
                inner = body[1:]
                closed = inner.rstrip().endswith("]")
                if closed:
                    inner = inner.rstrip()[:-1]
                objs = decode_objects(inner, final)
                calls += [make_call(o.get("name"), o.get("arguments", o.get("parameters"))) for o in objs]
            else:
                calls += self._name_args(body, final)
        return content, calls

    @staticmethod
    def _name_args(body: str, final: bool) -> list[ParsedToolCall]:
        decoder = json.JSONDecoder()
        calls = []
        i = 0
        while i < len(body):
            m = _NAME.match(body, i)
            if m is None:
                if final and body[i:].strip():
                    raise ValueError(f"cannot read a mistral tool call from {body[i:]!r}")
                break
            try:
                args, i = decoder.raw_decode(body, m.end())
            except ValueError:
                if final:
                    raise
                break
            calls.append(make_call(m.group(1), args))
            while i < len(body) and body[i] in " \t\r\n,":
                i += 1
        return calls
