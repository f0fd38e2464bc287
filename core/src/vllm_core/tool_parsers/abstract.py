"""The tool-parser interface, and the streamer that turns any parser into streaming deltas.

A parser only has to say where a tool-call section may start (``start_markers``) and how to read
the calls out of text (``parse``). Streaming then needs no per-parser state machine: text before
a marker streams as content; inside the section each call's name is sent as soon as it is known
and its arguments as they are generated (for parsers that can read a call in progress,
``partial_call``; the others send each call once it is complete); when the sequence ends the
non-streaming result is the authority, so streamed and non-streamed requests end with the same
calls and the same content.

Parsers never raise on model output (a malformed call is left out, or the text is content) and
never emit arguments that are not JSON (``NaN`` / ``Infinity`` / ``1e999`` reject the call).
"""

from __future__ import annotations

import json
import logging
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParsedToolCall:
    name: str
    arguments: str
    """The arguments as a JSON text (an object, or vLLM-style a bare value the model gave)."""


@dataclass(frozen=True)
class ToolCallDelta:
    """One streamed piece of a tool call: a new call carries its ``name``; ``arguments`` extends
    the call's arguments text (the pieces of a call concatenate to its final ``arguments``)."""

    index: int
    name: str | None
    arguments: str


@dataclass
class ExtractedToolCalls:
    """What ``ToolParser.extract_tool_calls`` found in a model output."""

    tool_calls: list[ParsedToolCall] = field(default_factory=list)
    content: str | None = None
    """Text outside the calls (None when there is none)."""

    @property
    def tools_called(self) -> bool:
        return bool(self.tool_calls)


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str) -> Any:
    """``json.loads`` that refuses ``NaN`` / ``Infinity`` (Python accepts them; JSON does not)."""
    return json.loads(text, parse_constant=_no_constants)


def make_call(name: Any, arguments: Any, raw: str | None = None) -> ParsedToolCall:
    """A call from a decoded name and arguments (an object, or a JSON string of one).

    ``raw``: the arguments exactly as the model wrote them (a JSON object's text); kept as the
    call's arguments when it is valid JSON, so streamed argument pieces add up to it. A string
    that holds no JSON is sent as a JSON string (vLLM's rule), never as bare text."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"tool call name must be a non-empty string, got {name!r}")
    if raw is not None and isinstance(arguments, dict):
        strict_json(raw)
        return ParsedToolCall(name, raw.strip())
    if isinstance(arguments, str):
        try:
            decoded = strict_json(arguments) if arguments.strip() else {}
        except ValueError:
            decoded = arguments
        arguments = decoded if isinstance(decoded, dict) or not arguments.strip() else arguments
    if arguments is None:
        arguments = {}
    return ParsedToolCall(name, json.dumps(arguments, ensure_ascii=False, allow_nan=False))


def json_call(obj: Any, body: str | None = None) -> ParsedToolCall:
    """A call from a decoded ``{"name": ..., "arguments" | "parameters": ...}`` object; ``body``
    (the object's text) keeps the arguments as written."""
    if not isinstance(obj, dict) or "name" not in obj or not ("arguments" in obj or "parameters" in obj):
        raise ValueError(f"a tool call needs name and arguments (or parameters), got {obj!r}")
    args = obj["arguments"] if "arguments" in obj else obj["parameters"]
    raw = None
    if body is not None and isinstance(args, dict):
        partial = json_partial_call(body)
        if partial is not None and partial[0] == obj["name"] and partial[1]:
            raw = partial[1]
    return make_call(obj["name"], args, raw)


_JSON_CALL_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"(?:arguments|parameters)"\s*:\s*')


def json_partial_call(body: str) -> tuple[str, str] | None:
    """(name, arguments text so far) of a JSON call ``{"name": ..., "arguments": {...`` still being
    generated: the name once it is complete, the arguments once they open as an object. The text
    returned is always a prefix of the arguments the complete call will have."""
    m = _JSON_CALL_HEAD.match(body)
    if m is None:
        return None
    try:
        name = json.loads(f'"{m.group(1)}"')
    except ValueError:
        return None
    args = body[m.end():]
    if not args.startswith("{"):
        return (name, "") if not args.strip() else None
    try:
        _, end = json.JSONDecoder().raw_decode(args)
        return name, args[:end]
    except ValueError:
        return name, args.rstrip()


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

    def partial_call(self, text: str) -> tuple[str, str] | None:
        """The call being generated after the complete ones, as (name, arguments text so far),
        or None. Optional: a parser without it streams each call once it is complete."""
        return None

    def extract_tool_calls(self, text: str) -> ExtractedToolCalls:
        """Non-streaming: the calls, or the whole text as content when none parse. Never raises."""
        try:
            content, calls = self.parse(text, final=True)
        except Exception as exc:  # noqa: BLE001 - model output must never fail a request
            logger.debug("%s: no tool calls read from the output (%s: %s)", type(self).__name__,
                         type(exc).__name__, exc)
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
    """Per-choice streaming state: feed the growing text, get content deltas and call deltas."""

    def __init__(self, parser: ToolParser) -> None:
        self.parser = parser
        self.content_sent = 0
        self.in_tools = False
        self.calls: list[ParsedToolCall] = []
        """Complete calls sent (their arguments in full)."""
        self.open_name: str | None = None
        """The call in progress whose name was sent."""
        self.open_args = ""
        """Its arguments sent so far."""

    @property
    def num_calls(self) -> int:
        return len(self.calls) + (self.open_name is not None)

    def feed(self, text: str) -> tuple[str, list[ToolCallDelta]]:
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
            partial = self.parser.partial_call(text)
        except Exception:  # noqa: BLE001 - incomplete or malformed so far: wait for more
            calls, partial = [], None
        out = self._complete(calls)
        if partial is not None and len(calls) == len(self.calls):
            out += self._progress(*partial)
        return delta, out

    def finish(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        """At the end: whatever the non-streaming parse has that was not sent yet."""
        final = self.parser.extract_tool_calls(text)
        content = final.content or ""
        delta = content[self.content_sent:] if len(content) > self.content_sent else ""
        self.content_sent = max(self.content_sent, len(content))
        return delta, self._complete(final.tool_calls)

    def _complete(self, calls: list[ParsedToolCall]) -> list[ToolCallDelta]:
        """Deltas that finish the open call and send the newly complete ones."""
        n = len(self.calls)
        if calls[:n] != self.calls:
            return []  # the parse changed its mind about a sent call: keep what was sent
        out: list[ToolCallDelta] = []
        for call in calls[n:]:
            index = len(self.calls)
            if self.open_name is not None:
                if self.open_name == call.name and call.arguments.startswith(self.open_args):
                    out.append(ToolCallDelta(index, None, call.arguments[len(self.open_args):]))
                else:
                    logger.warning("streamed tool call %r ended unlike its start; sending the final call anew",
                                   call.name)
                    out.append(ToolCallDelta(index + 1, call.name, call.arguments))
                    self.calls.append(ParsedToolCall(self.open_name, self.open_args))
                self.open_name, self.open_args = None, ""
            else:
                out.append(ToolCallDelta(index, call.name, call.arguments))
            self.calls.append(call)
        return out

    def _progress(self, name: str, args: str) -> list[ToolCallDelta]:
        index = len(self.calls)
        if self.open_name is None:
            self.open_name, self.open_args = name, args
            return [ToolCallDelta(index, name, args)]
        if name != self.open_name or not args.startswith(self.open_args) or args == self.open_args:
            return []
        piece, self.open_args = args[len(self.open_args):], args
        return [ToolCallDelta(index, None, piece)]

    def _content(self, text: str, end: int) -> str:
        delta = text[self.content_sent:end] if end > self.content_sent else ""
        self.content_sent = max(self.content_sent, end)
        return delta
