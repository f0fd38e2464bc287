"""The embedded default model (SmolLM2-135M-Instruct) behind the server: greedy output equals
``LLM.generate``, and a named ``tool_choice`` returns a well-formed call, streaming and not."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.server.conftest import RunningServer, start_server
from vllm_core import LLM, SamplingParams

ENGINE = {"max_model_len": 512, "num_gpu_blocks_override": 128, "max_num_seqs": 16}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def default_server(default_model_path: str) -> Iterator[RunningServer]:
    srv = start_server(default_model_path, ENGINE, served_name="smollm2",
                       enable_auto_tool_choice=True, tool_call_parser="hermes")
    yield srv
    srv.stop()


def test_greedy_through_the_server_equals_llm(default_server: RunningServer, default_model_path: str) -> None:
    llm = LLM(default_model_path, use_tqdm_on_load=False, **ENGINE)
    params = SamplingParams(max_tokens=12, temperature=0)
    client = default_server.client()
    prompts = ["The capital of France is", "def fibonacci(n):"]
    expected = [o.outputs[0].text for o in llm.generate(prompts, params, use_tqdm=False)]
    got = client.completions.create(model="smollm2", prompt=prompts, max_tokens=12, temperature=0)
    assert [c.text for c in sorted(got.choices, key=lambda c: c.index)] == expected

    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    chat_expected = llm.chat(messages, params, use_tqdm=False)[0].outputs[0].text
    chat = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=12, temperature=0)
    assert chat.choices[0].message.content == chat_expected
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="smollm2", messages=messages, max_tokens=12, temperature=0, stream=True) if c.choices)
    assert streamed == chat_expected


def test_named_tool_choice_returns_a_well_formed_call(default_server: RunningServer) -> None:
    client = default_server.client()
    kw = dict(model="smollm2", messages=[{"role": "user", "content": "What is the weather in Paris?"}],
              tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
              max_tokens=40, temperature=0)
    resp = client.chat.completions.create(**kw)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id and call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args, dict) and isinstance(args.get("city"), str) and args["city"]

    chunks = list(client.chat.completions.create(**kw, stream=True))
    deltas = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert len(deltas) == 1 and deltas[0].function.name == "get_weather"
    assert json.loads(deltas[0].function.arguments) == args
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_anthropic_client_forced_tool_use(default_server: RunningServer) -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=default_server.url, api_key="x", max_retries=0)
    msg = client.messages.create(
        model="smollm2", max_tokens=40, messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[{"name": "get_weather", "description": "Current weather of a city",
                "input_schema": WEATHER["function"]["parameters"]}],  # type: ignore[index]
        tool_choice={"type": "tool", "name": "get_weather"}, extra_body={"temperature": 0},
    )
    assert msg.stop_reason == "tool_use"
    (block,) = [b for b in msg.content if b.type == "tool_use"]
    assert block.name == "get_weather" and isinstance(block.input["city"], str)


def test_required_tool_choice_and_json_schema_response(default_server: RunningServer) -> None:
    client = default_server.client()
    resp = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "What is the weather like in Rome today?"}], tools=[WEATHER],
        tool_choice="required", max_tokens=150, temperature=0)
    calls = resp.choices[0].message.tool_calls
    assert calls and all(c.function.name == "get_weather" for c in calls), (resp.choices[0].finish_reason, repr(resp.choices[0].message.content))
    assert all(isinstance(json.loads(c.function.arguments)["city"], str) for c in calls)

    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    out = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "What is 2 + 3? Answer in JSON."}], max_tokens=30,
        temperature=0, response_format={"type": "json_schema", "json_schema": {"name": "sum", "schema": schema}})
    assert isinstance(json.loads(out.choices[0].message.content)["answer"], int)
