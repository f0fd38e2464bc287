"""Pythonic format (Llama 3.2 / 4): the reply is a Python list of calls,
``[get_weather(city="Paris"), get_time(tz="CET")]``, optionally in ``<|python_start|>...<|python_end|>``.

As vLLM reads it: a call whose arguments are not JSON values (``b'z'``, ``1e999``) is left out
and its siblings kept; when the list does not parse at all (a broken quote in one call), each
call is read on its own so the good ones survive; nothing here ever raises past ``parse``."""

from __future__ import annotations

import ast
import logging
import re
from typing import Any, ClassVar

from vllm_core.tool_parsers.abstract import ParsedToolCall, ToolParser, make_call

logger = logging.getLogger(__name__)

_START, _END = "<|python_start|>", "<|python_end|>"
_CALL_BOUNDARY = re.compile(r"\)\s*,\s*(?=[A-Za-z_][\w.]*\s*\()")


def _call(node: ast.expr) -> ParsedToolCall:
    if not isinstance(node, ast.Call) or not isinstance(node.func, (ast.Name, ast.Attribute)) or node.args:
        raise ValueError(f"not a keyword-argument call: {ast.unparse(node)}")
    name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
    args: dict[str, Any] = {}
    for kw in node.keywords:
        if kw.arg is None:
            raise ValueError("**kwargs is not a tool call argument")
        args[kw.arg] = _json_value(ast.literal_eval(kw.value))
    return make_call(name, args)


def _json_value(value: Any) -> Any:
    """A literal as JSON allows it (tuples become lists); bytes, sets, complex numbers are refused."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _json_value(v) for k, v in value.items()}
    raise ValueError(f"{type(value).__name__} is not a JSON value")


def _calls(elts: list[ast.expr]) -> list[ParsedToolCall]:
    calls = []
    for node in elts:
        try:
            calls.append(_call(node))
        except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError) as exc:
            logger.warning("pythonic tool parser: left out a call it cannot read (%s)", exc)
    return calls


def _salvage(body: str) -> list[ParsedToolCall]:
    """Each top-level call of an unparsable list on its own."""
    inner = body.strip()
    if not (inner.startswith("[") and inner.endswith("]")):
        return []
    pieces = _CALL_BOUNDARY.split(inner[1:-1])
    calls = []
    for k, piece in enumerate(pieces):
        source = piece + (")" if k < len(pieces) - 1 else "")
        try:
            node = ast.parse(source.strip(), mode="eval").body
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        calls += _calls([node])
    return calls


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
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            if final:
                calls = _salvage(body)
                if calls:
                    return None, calls
                raise ValueError("the pythonic tool-call list does not parse") from None
            return None, []
        if not isinstance(tree, ast.List):
            raise ValueError("pythonic tool calls must be a list of calls")
        calls = _calls(tree.elts)
        if tree.elts and not calls and final:
            raise ValueError("none of the pythonic tool calls could be read")
        return None, calls
