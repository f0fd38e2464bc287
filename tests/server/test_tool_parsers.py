"""Built-in tool parsers and the reasoning parser on model-output text, streaming and not.

Streaming feeds the text in small pieces (as tokens arrive) and must end with exactly the calls
and content of the non-streaming parse.
"""

from __future__ import annotations

import json

import pytest

from vllm_core.plugins import registry
from vllm_core.reasoning.abstract import ReasoningStreamer
from vllm_core.tool_parsers.abstract import ParsedToolCall, ToolCallStreamer

W = {"city": "Paris", "unit": "celsius"}
T = {"tz": "CET"}

CASES: dict[str, list[tuple[str, str | None, list[tuple[str, dict[str, object]]]]]] = {
    "hermes": [
        ('Let me check.<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n'
         '</tool_call>\n<tool_call>{"name": "get_time", "arguments": {"tz": "CET"}}</tool_call>',
         "Let me check.", [("get_weather", W), ("get_time", T)]),
        ('<tool_call>{"name": "get_time", "arguments": {"tz": "CET"}}', None, [("get_time", T)]),  # unclosed
        ("No tools needed: 2 < 3.", "No tools needed: 2 < 3.", []),
        ("<tool_call>{not json}</tool_call>", "<tool_call>{not json}</tool_call>", []),
    ],
    "llama3_json": [
        ('{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}', None, [("get_weather", W)]),
        ('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}; '
         '{"name": "get_time", "parameters": {"tz": "CET"}}', None, [("get_weather", W), ("get_time", T)]),
        ('The answer is {"a": 1}', 'The answer is {"a": 1}', []),
    ],
    "mistral": [
        ('[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}, '
         '{"name": "get_time", "arguments": {"tz": "CET"}}]', None, [("get_weather", W), ("get_time", T)]),
        ('Sure. [TOOL_CALLS]get_time{"tz": "CET"}', "Sure. ", [("get_time", T)]),
        ("Plain answer.", "Plain answer.", []),
    ],
    "pythonic": [
        ('[get_weather(city="Paris", unit="celsius"), get_time(tz="CET")]', None,
         [("get_weather", W), ("get_time", T)]),
        ('<|python_start|>[get_time(tz="CET")]<|python_end|>', None, [("get_time", T)]),
        ("[1, 2] is a list.", "[1, 2] is a list.", []),
        ("Hello [world]", "Hello [world]", []),
    ],
}


def _calls(calls: list[ParsedToolCall]) -> list[tuple[str, dict[str, object]]]:
    return [(c.name, json.loads(c.arguments)) for c in calls]


def _stream(name: str, text: str, step: int) -> tuple[str, list[ParsedToolCall]]:
    streamer = ToolCallStreamer(registry.tool_parsers().get(name)(None))
    content, calls = "", []
    for end in range(step, len(text) + step, step):
        delta, new = streamer.feed(text[:end])
        content, calls = content + delta, calls + new
    delta, new = streamer.finish(text)
    return content + delta, calls + new


@pytest.mark.parametrize("name", sorted(CASES))
def test_parser_non_streaming_and_streaming(name: str) -> None:
    parser = registry.tool_parsers().get(name)(None)
    for text, content, calls in CASES[name]:
        got = parser.extract_tool_calls(text)
        assert _calls(got.tool_calls) == calls, text
        assert got.content == content, text
        assert got.tools_called == bool(calls)
        for step in (1, 3, 7):
            s_content, s_calls = _stream(name, text, step)
            assert _calls(s_calls) == calls, (text, step)
            assert s_content == (content or ""), (text, step)


def test_streaming_sends_complete_calls_before_the_end() -> None:
    streamer = ToolCallStreamer(registry.tool_parsers().get("hermes")(None))
    first = '<tool_call>{"name": "get_time", "arguments": {"tz": "CET"}}</tool_call>'
    content, calls = streamer.feed(first + "\n<tool_call>{\"name\": ")
    assert content == "" and _calls(calls) == [("get_time", T)]


def test_content_before_a_marker_streams_and_a_partial_marker_is_held_back() -> None:
    streamer = ToolCallStreamer(registry.tool_parsers().get("hermes")(None))
    assert streamer.feed("Hello <tool_") == ("Hello ", [])
    assert streamer.feed("Hello <tool_x") == ("<tool_x", [])


@pytest.mark.parametrize(
    "text, reasoning, content",
    [
        ("<think>Paris is in France.</think>The capital is Paris.", "Paris is in France.", "The capital is Paris."),
        ("Step by step...</think>Done.", "Step by step...", "Done."),
        ("<think>still thinking", "still thinking", None),
        ("<think>a</think>", "a", None),
    ],
)
def test_deepseek_r1_reasoning(text: str, reasoning: str, content: str | None) -> None:
    parser = registry.reasoning_parsers().get("deepseek_r1")(None)
    assert parser.extract_reasoning(text) == (reasoning, content)
    for step in (1, 4):
        streamer = ReasoningStreamer(parser)
        got_reasoning, answer = "", ""
        for end in range(step, len(text) + step, step):
            delta, answer = streamer.feed(text[:end], finished=end >= len(text))
            got_reasoning += delta
        assert got_reasoning == reasoning and answer == (content or "")
