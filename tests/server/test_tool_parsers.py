"""Built-in tool parsers and the reasoning parser on model-output text, streaming and not.

Streaming feeds the text in small pieces (as tokens arrive) and must end with exactly the calls
and content of the non-streaming parse; a call's name is sent once and its arguments in pieces
that add up to the final arguments. The vLLM cases are its parser tests' vectors, written anew.
"""

from __future__ import annotations

import json

import pytest

from vllm_core.plugins import registry
from vllm_core.reasoning.abstract import ReasoningStreamer
from vllm_core.tool_parsers.abstract import ParsedToolCall, ToolCallDelta, ToolCallStreamer

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


def _assemble(deltas: list[ToolCallDelta]) -> list[ParsedToolCall]:
    """Calls from streamed deltas; a name appears once per call, at its first delta."""
    names: dict[int, str] = {}
    args: dict[int, str] = {}
    for d in deltas:
        if d.name is not None:
            assert d.index not in names, f"call {d.index} named twice"
            names[d.index] = d.name
        assert d.index in names, "arguments before the call's name"
        args[d.index] = args.get(d.index, "") + d.arguments
    assert sorted(names) == list(range(len(names)))
    return [ParsedToolCall(names[i], args[i]) for i in sorted(names)]


def _stream(name: str, text: str, step: int) -> tuple[str, list[ParsedToolCall]]:
    streamer = ToolCallStreamer(registry.tool_parsers().get(name)(None))
    content, deltas = "", []
    for end in range(step, len(text) + step, step):
        delta, new = streamer.feed(text[:end])
        content, deltas = content + delta, deltas + new
    delta, new = streamer.finish(text)
    return content + delta, _assemble(deltas + new)


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
    content, deltas = streamer.feed(first + "\n<tool_call>{\"name\": ")
    assert content == "" and _calls(_assemble(deltas)) == [("get_time", T)]


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


def _parse(name: str, text: str) -> tuple[str | None, list[tuple[str, object]]]:
    got = registry.tool_parsers().get(name)(None).extract_tool_calls(text)
    for c in got.tool_calls:
        assert not any(k in c.arguments for k in ("NaN", "Infinity")), c.arguments
        json.loads(c.arguments)
    return got.content, [(c.name, json.loads(c.arguments)) for c in got.tool_calls]


SEARCH = '{"name": "searchTool", "parameters": {"query": "test"}}'
WEATHER_PY = "get_weather(city='San Francisco', metric='celsius')"
WEATHER = ("get_weather", {"city": "San Francisco", "metric": "celsius"})

VLLM_VECTORS: list[tuple[str, str, str | None, list[tuple[str, object]]]] = [
    # hermes: arguments serialized once more are decoded; a bare string is sent as a JSON string.
    ("hermes", '<tool_call>\n{"name": "get_db_config", "arguments": "{\\"param\\": \\"max_connections\\"}"}\n'
     "</tool_call>", "", [("get_db_config", {"param": "max_connections"})]),
    ("hermes", '<tool_call>\n{"name": "do_thing", "arguments": "hello"}\n</tool_call>', "", [("do_thing", "hello")]),
    ("hermes", '<tool_call>\n{"name": "final_answer", "arguments": {"trigger": true}}',
     "", [("final_answer", {"trigger": True})]),
    ("hermes", '<tool_call>\n{"name": "final_answer", "arguments": {"trigger": true}', None, []),
    ("hermes", '<tool_call>{"name": "f", "arguments": {"x": NaN}}</tool_call>', None, []),
    # llama3_json: calls inside prose, a call followed by prose with braces or JSON, bad keys.
    ("llama3_json", 'Here is the result: {"name": "getOpenIncidentsTool", "parameters": {}} Would you like more?',
     None, [("getOpenIncidentsTool", {})]),
    ("llama3_json", "Here are the results: " + SEARCH + '; {"name": "getOpenIncidentsTool", "parameters": {}}; '
     '{"name": "searchTool", "parameters": {"query": "test2"}} Would you like to know more?', None,
     [("searchTool", {"query": "test"}), ("getOpenIncidentsTool", {}), ("searchTool", {"query": "test2"})]),
    ("llama3_json", SEARCH + " I used {searchTool} for this.", None, [("searchTool", {"query": "test"})]),
    ("llama3_json", SEARCH + ' The arguments I passed were {"query": "test"}', None,
     [("searchTool", {"query": "test"})]),
    ("llama3_json", '{"name": "invalidTool", "parameters": {invalid json}', None, []),
    ("llama3_json", '{"parameters": {}}', None, []),
    ("llama3_json", '{"name": "toolWithoutParams"}', None, []),
    ("llama3_json", '{"name": "parserTool", "parameters": {"text": "He said \\"Hello {world}\\""}}', None,
     [("parserTool", {"text": 'He said "Hello {world}"'})]),
    # mistral: text after the call is content, never the marker.
    ("mistral", '[TOOL_CALLS]get_time{"tz": "CET"} Let me know if you need more.',
     "Let me know if you need more.", [("get_time", {"tz": "CET"})]),
    ("mistral", 'Sure. [TOOL_CALLS][{"name": "get_time", "arguments": {"tz": "CET"}}] Done.', "Sure. Done.",
     [("get_time", {"tz": "CET"})]),
    # pythonic: bad siblings never drop good calls, never raise, never emit non-JSON arguments.
    ("pythonic", f"[bad(x=b'z'), {WEATHER_PY}]", None, [WEATHER]),
    ("pythonic", f"[calc(x=1e999), {WEATHER_PY}]", None, [WEATHER]),
    ("pythonic", f"[{WEATHER_PY}, f(a='x 'y', b='z')]", None, [WEATHER]),
    ("pythonic", "[f(a='x 'y' 'z), g(b='p 'q' 'r)]", None, []),
    ("pythonic", "[foo(x=1])]", None, []),
    ("pythonic", "[register_user(name='John Doe', age=37, address={'city': 'SF'}, role=None, passed_test=True, "
     "aliases=('John', 'Johnny'))]", None, [("register_user", {"name": "John Doe", "age": 37, "address": {
         "city": "SF"}, "role": None, "passed_test": True, "aliases": ["John", "Johnny"]})]),
    ("pythonic", "[do(x={1, 2}), do(y=1j), do(**k)]", None, []),
]


@pytest.mark.parametrize("name, text, content, calls", VLLM_VECTORS)
def test_vllm_vectors(name: str, text: str, content: str | None, calls: list[tuple[str, object]]) -> None:
    got_content, got_calls = _parse(name, text)
    assert got_calls == calls
    if calls:
        assert got_content == (content or None)
    else:
        assert got_content == text
    _, streamed = _stream(name, text, 5)  # streaming never raises, and ends with the calls found
    if calls:  # (a call whose end turns out malformed may already have been streamed in part)
        assert [(c.name, json.loads(c.arguments)) for c in streamed] == calls


@pytest.mark.parametrize("name, text", [
    ("hermes", 'Let me look.<tool_call>{"name": "search", "arguments": {"q": "cats and dogs", "n": 3}}</tool_call>'
               '<tool_call>{"name": "search", "arguments": {"q": "birds"}}</tool_call>'),
    ("llama3_json", '{"name": "search", "parameters": {"q": "cats and dogs", "n": 3}}; '
                    '{"name": "search", "parameters": {"q": "birds"}}'),
    ("mistral", '[TOOL_CALLS][{"name": "search", "arguments": {"q": "cats and dogs", "n": 3}}, '
                '{"name": "search", "arguments": {"q": "birds"}}]'),
])
def test_arguments_stream_as_deltas(name: str, text: str) -> None:
    """The name comes first, then the arguments in pieces as they are generated (one call per
    delta: parallel calls never share one), adding up to the non-streaming arguments."""
    streamer = ToolCallStreamer(registry.tool_parsers().get(name)(None))
    deltas: list[ToolCallDelta] = []
    for end in range(1, len(text) + 1):
        _, new = streamer.feed(text[:end])
        assert len({d.index for d in new}) <= 1
        deltas += new
    deltas += streamer.finish(text)[1]
    first = [d for d in deltas if d.index == 0]
    assert first[0].name == "search" and len([d for d in first if d.arguments]) > 3, first
    final = registry.tool_parsers().get(name)(None).extract_tool_calls(text).tool_calls
    assert _assemble(deltas) == final
    assert [json.loads(c.arguments) for c in final] == [{"q": "cats and dogs", "n": 3}, {"q": "birds"}]


def test_parallel_calls_are_split_one_per_chunk() -> None:
    """When one engine step completes several calls, the chat stream still sends one call per chunk."""
    from vllm_core.entrypoints.openai.protocol import DeltaFunctionCall, DeltaMessage, DeltaToolCall
    from vllm_core.entrypoints.openai.serving_chat import one_call_per_delta

    def piece(i: int, name: str | None, args: str) -> DeltaToolCall:
        return DeltaToolCall(index=i, id="x" if name else None, function=DeltaFunctionCall(name=name, arguments=args))

    delta = DeltaMessage(content="ok", tool_calls=[piece(0, None, '"}'), piece(1, "b", '{"q": 1}'), piece(2, "c", "{}")])
    parts = one_call_per_delta(delta)
    assert [[tc.index for tc in p.tool_calls] for p in parts] == [[0], [1], [2]]
    assert parts[0].content == "ok" and parts[1].content is None
    single = DeltaMessage(tool_calls=[piece(0, "a", "{")])
    assert one_call_per_delta(single) == [single]
