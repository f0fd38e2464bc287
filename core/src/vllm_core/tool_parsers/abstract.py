"""The tool-parser interface, and the streamer that turns any parser into streaming deltas.

A parser only has to say where a tool-call section may start (``start_markers``) and how to read
the calls out of text (``parse``). Streaming then needs no per-parser state machine: text before
a marker streams as content; inside the section each call is sent once it is complete; when the
sequence ends the non-streaming result is the authority, so streamed and non-streamed requests
end with the same calls and the same content.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class ParsedToolCall:
    name: str
    arguments: str
    """The arguments as a JSON object text."""


@dataclass
class ExtractedToolCalls:
    """What ``ToolParser.extract_tool_calls`` found in a model output."""

    tool_calls: list[ParsedToolCall] = field(default_factory=list)
    content: str | None = None
    """Text outside the calls (None when there is none)."""

    @property
    def tools_called(self) -> bool:
        return bool(self.tool_calls)


def make_call(name: Any, arguments: Any) -> ParsedToolCall:
    """A call from a decoded name and arguments (an object, or a JSON string of one)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"tool call name must be a non-empty string, got {name!r}")
    if isinstance(arguments, str):
        arguments = json.loads(arguments) if arguments.strip() else {}
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise ValueError(f"tool call arguments must be an object, got {arguments!r}")
    return ParsedToolCall(name, json.dumps(arguments, ensure_ascii=False))


class ToolParser(ABC):
    """Reads tool calls out of a model's text. Registered by name through ``register_tool_parsers``."""

    start_markers: ClassVar[tuple[str, ...]] = ()
    """Text that opens the tool-call section."""
    needs_special_tokens: ClassVar[bool] = False
    """The markers are special tokens: generate with ``skip_special_tokens=False``."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    @abstractmethod
    def parse(self, text: str, final: bool) -> tuple[str | None, list[ParsedToolCall]]:
        """(content, the complete calls) in ``text``. With ``final`` false the text may stop in
        the middle of a call, which is then left out; a malformed call raises ``ValueError``."""

    def extract_tool_calls(self, text: str) -> ExtractedToolCalls:
        """Non-streaming: the calls, or the whole text as content when none parse."""
        try:
            content, calls = self.parse(text, final=True)
        except (ValueError, SyntaxError):
            return ExtractedToolCalls([], text)
        if not calls:
            return ExtractedToolCalls([], text)
        return ExtractedToolCalls(calls, content or None)

    def find_start(self, text: str) -> int:
        """Index of the first start marker in ``text``, or -1."""
        found = [i for i in (text.find(m) for m in self.start_markers) if i != -1]
        return min(found, default=-1)

    def partial_marker_len(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that could begin a start marker."""
        best = 0
        for m in self.start_markers:
            for k in range(min(len(m) - 1, len(text)), best, -1):
                if text.endswith(m[:k]):
                    best = k
                    break
        return best


class ToolCallStreamer:
    """Per-choice streaming state: feed the growing text, get content deltas and finished calls."""

    def __init__(self, parser: ToolParser) -> None:
        self.parser = parser
        self.content_sent = 0
        self.in_tools = False
        self.calls_sent: list[ParsedToolCall] = []

    def feed(self, text: str) -> tuple[str, list[ParsedToolCall]]:
        if not self.in_tools:
            start = self.parser.find_start(text)
            if start == -1:
                end = len(text) - self.parser.partial_marker_len(text)
                return self._content(text, end), []
            self.in_tools = True
            delta = self._content(text, start)
        else:
            delta = ""
        try:
            _, calls = self.parser.parse(text, final=False)
        except (ValueError, SyntaxError):
            calls = []
        new = calls[len(self.calls_sent):] if calls[: len(self.calls_sent)] == self.calls_sent else []
        self.calls_sent.extend(new)
        return delta, new

    def finish(self, text: str) -> tuple[str, list[ParsedToolCall]]:
        """At the end: whatever the non-streaming parse has that was not sent yet."""
        final = self.parser.extract_tool_calls(text)
        content = final.content or ""
        delta = content[self.content_sent:] if len(content) > self.content_sent else ""
        self.content_sent = max(self.content_sent, len(content))
        n = len(self.calls_sent)
        new = final.tool_calls[n:] if final.tool_calls[:n] == self.calls_sent else []
        self.calls_sent.extend(new)
        return delta, new

    def _content(self, text: str, end: int) -> str:
        delta = text[self.content_sent:end] if end > self.content_sent else ""
        self.content_sent = max(self.content_sent, end)
        return delta
