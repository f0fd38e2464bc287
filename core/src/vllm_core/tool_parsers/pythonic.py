"""Pythonic format (Llama 3.2 / 4): the reply is a Python list of calls,
``[get_weather(city="Paris"), get_time(tz="CET")]``, optionally in ``<|python_start|>...<|python_end|>``."""

from __future__ import annotations

import ast
from typing import ClassVar

from vllm_core.tool_parsers.abstract import ParsedToolCall, ToolParser, make_call

_START, _END = "<|python_start|>", "<|python_end|>"


class PythonicToolParser(ToolParser):
    start_markers: ClassVar[tuple[str, ...]] = (_START, "[")

    def find_start(self, text: str) -> int:
        stripped = text.lstrip()
        if stripped.startswith(_START) or stripped.startswith("["):
            return len(text) - len(stripped)
        return -1

    def partial_marker_len(self, text: str) -> int:
        stripped = text.lstrip()
        return len(text) if _START.startswith(stripped) else 0

    def parse(self, text: str, final: bool) -> tuple[str | None, list[ParsedToolCall]]:
        start = self.find_start(text)
        if start == -1:
            return text, []
        body = text[start:].strip().removeprefix(_START).removesuffix(_END).strip()
        try:
            tree = ast.parse(body, mode="eval").body
        except SyntaxError:
            if final:
                raise
            return None, []
        if not isinstance(tree, ast.List):
            raise ValueError("pythonic tool calls must be a list of calls")
        calls = []
        for node in tree.elts:
            if not isinstance(node, ast.Call) or not isinstance(node.func, (ast.Name, ast.Attribute)) or node.args:
                raise ValueError(f"not a keyword-argument call: {ast.unparse(node)}")
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            args = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg is not None}
            calls.append(make_call(name, args))
        return None, calls
