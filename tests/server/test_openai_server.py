"""Completions and chat through a real server and the official ``openai`` client."""

from __future__ import annotations

import httpx
import pytest

from tests.server.conftest import TINY_ENGINE, RunningServer, read_metrics
from vllm_core import LLM, SamplingParams

PROMPTS = ["The capital of France is", "Once upon a time", "1, 2, 3,"]


@pytest.fixture(scope="module")
def offline(tiny_chat_model: str) -> LLM:
    return LLM(tiny_chat_model, use_tqdm_on_load=False, **TINY_ENGINE)


def test_greedy_completion_equals_llm_generate(server: RunningServer, offline: LLM) -> None:
    client = server.client()
    expected = offline.generate(PROMPTS, SamplingParams(max_tokens=10, temperature=0), use_tqdm=False)
    resp = client.completions.create(model=server.model, prompt=PROMPTS, max_tokens=10, temperature=0)
    assert resp.object == "text_completion" and resp.model == server.model
    got = sorted(resp.choices, key=lambda c: c.index)
    assert [c.text for c in got] == [o.outputs[0].text for o in expected]
    assert [c.finish_reason for c in got] == [o.outputs[0].finish_reason for o in expected]
    assert resp.usage.prompt_tokens == sum(len(o.prompt_token_ids) for o in expected)
    assert resp.usage.completion_tokens == sum(len(o.outputs[0].token_ids) for o in expected)
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_streamed_completion_concatenates_to_the_full_text(server: RunningServer) -> None:
    client = server.client()
    full = client.completions.create(model=server.model, prompt=PROMPTS[1], max_tokens=16, temperature=0)
    stream = client.completions.create(model=server.model, prompt=PROMPTS[1], max_tokens=16, temperature=0,
                                       stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == full.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == full.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == full.usage.prompt_tokens


def test_sse_wire_format_ends_with_done(server: RunningServer) -> None:
    body = {"model": server.model, "prompt": "Hi", "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]" and events.count("data: [DONE]") == 1


def test_n_samples_and_token_prompts(server: RunningServer, offline: LLM) -> None:
    client = server.client()
    ids = offline.get_tokenizer().encode("Hello world")
    resp = client.completions.create(model=server.model, prompt=ids, max_tokens=5, temperature=0.8, n=3, seed=7,
                                     extra_body={"ignore_eos": True})
    assert sorted(c.index for c in resp.choices) == [0, 1, 2]
    assert resp.usage.prompt_tokens == len(ids) and resp.usage.completion_tokens == 15
    again = client.completions.create(model=server.model, prompt=ids, max_tokens=5, temperature=0.8, n=3, seed=7,
                                      extra_body={"ignore_eos": True})
    assert sorted(c.text for c in again.choices) == sorted(c.text for c in resp.choices)  # seeded


def test_stop_strings_stream_like_non_stream(server: RunningServer, offline: LLM) -> None:
    client = server.client()
    base = offline.generate(PROMPTS[2], SamplingParams(max_tokens=20, temperature=0), use_tqdm=False)[0].outputs[0].text
    stop = base[5:8]
    full = client.completions.create(model=server.model, prompt=PROMPTS[2], max_tokens=20, temperature=0, stop=[stop])
    assert full.choices[0].finish_reason == "stop" and stop not in full.choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=server.model, prompt=PROMPTS[2], max_tokens=20, temperature=0, stop=[stop], stream=True))
    assert streamed == full.choices[0].text


def test_chat_equals_llm_chat_and_streams(server: RunningServer, offline: LLM) -> None:
    client = server.client()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    expected = offline.chat(messages, SamplingParams(max_tokens=12, temperature=0), use_tqdm=False)[0]
    resp = client.chat.completions.create(model=server.model, messages=messages, max_tokens=12, temperature=0)
    assert resp.object == "chat.completion"
    msg = resp.choices[0].message
    assert msg.role == "assistant" and msg.content == expected.outputs[0].text
    assert resp.usage.prompt_tokens == len(expected.prompt_token_ids)
    assert resp.usage.completion_tokens == len(expected.outputs[0].token_ids)

    stream = client.chat.completions.create(model=server.model, messages=messages, max_completion_tokens=12,
                                            temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == msg.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == resp.choices[0].finish_reason
    assert chunks[-1].usage.total_tokens == resp.usage.total_tokens


def test_chat_with_n_and_vllm_extras(server: RunningServer) -> None:
    client = server.client()
    resp = client.chat.completions.create(
        model=server.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=6, n=2, temperature=1.0,
        extra_body={"top_k": 5, "min_p": 0.05, "ignore_eos": True, "seed": 3},
    )
    assert sorted(c.index for c in resp.choices) == [0, 1]
    assert resp.usage.completion_tokens == 12 and all(c.finish_reason == "length" for c in resp.choices)


def test_models_health_version_tokenize(server: RunningServer, offline: LLM) -> None:
    client = server.client()
    models = client.models.list()
    assert [m.id for m in models.data] == [server.model]
    assert httpx.get(f"{server.url}/health").status_code == 200
    assert httpx.get(f"{server.url}/version").json()["version"]
    tok = httpx.post(f"{server.url}/tokenize", json={"prompt": "Hello world"}).json()
    assert tok["tokens"] == offline.get_tokenizer().encode("Hello world") and tok["count"] == len(tok["tokens"])
    assert tok["max_model_len"] == TINY_ENGINE["max_model_len"]
    chat_tok = httpx.post(f"{server.url}/tokenize", json={"messages": [{"role": "user", "content": "Hi"}]}).json()
    assert chat_tok["count"] > 5
    detok = httpx.post(f"{server.url}/detokenize", json={"tokens": tok["tokens"]}).json()
    assert detok["prompt"] == "Hello world"


def test_metrics_count_tokens_and_latencies(server: RunningServer) -> None:
    client = server.client()
    before = read_metrics(server.url)
    client.completions.create(model=server.model, prompt="abc", max_tokens=5, temperature=0, extra_body={"ignore_eos": True})
    after = read_metrics(server.url)
    assert after["vllm:generation_tokens_total"] - before.get("vllm:generation_tokens_total", 0) == 5
    assert after["vllm:prompt_tokens_total"] > before.get("vllm:prompt_tokens_total", 0)
    assert after["vllm:e2e_request_latency_seconds_count"] >= 1
    assert after["vllm:time_to_first_token_seconds_count"] >= 1
    assert after["vllm:time_per_output_token_seconds_count"] >= 1
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
                 "vllm:prefix_cache_hit_rate", "vllm:prefix_cache_queries_total", "vllm:num_free_kv_cache_blocks"):
        assert name in after
    assert after["vllm:num_requests_running"] == 0 and after["vllm:kv_cache_usage_perc"] == 0


def test_completion_logprobs_streaming_and_not(server: RunningServer, offline: LLM) -> None:
    client = server.client()
    kw = dict(model=server.model, prompt=PROMPTS[0], max_tokens=6, temperature=0, logprobs=2)
    resp = client.completions.create(**kw)
    lp = resp.choices[0].logprobs
    assert len(lp.tokens) == resp.usage.completion_tokens == len(lp.token_logprobs) == len(lp.top_logprobs)
    assert "".join(lp.tokens) == resp.choices[0].text
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert chosen <= 0 and len(top) == 2 and chosen == pytest.approx(max(top.values()))  # greedy: the top one
    assert lp.text_offset[0] == 0 and lp.text_offset[1] == len(lp.tokens[0])
    expected = offline.generate(PROMPTS[0], SamplingParams(max_tokens=6, temperature=0, logprobs=2), use_tqdm=False)
    ref = expected[0].outputs[0]
    assert lp.token_logprobs == pytest.approx([ref.logprobs[i][t].logprob for i, t in enumerate(ref.token_ids)], abs=1e-4)
    streamed = [t for c in client.completions.create(stream=True, **kw) if c.choices and c.choices[0].logprobs
                for t in c.choices[0].logprobs.tokens]
    assert streamed == lp.tokens


def test_chat_logprobs_streaming_and_not(server: RunningServer) -> None:
    client = server.client()
    kw = dict(model=server.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=5, temperature=0,
              logprobs=True, top_logprobs=3)
    resp = client.chat.completions.create(**kw)
    content = resp.choices[0].logprobs.content
    assert len(content) == resp.usage.completion_tokens
    for item in content:
        assert len(item.top_logprobs) == 3 and item.top_logprobs[0].token == item.token
        assert item.logprob == pytest.approx(item.top_logprobs[0].logprob) and bytes(item.bytes).decode() == item.token
    streamed = [i.token for c in client.chat.completions.create(stream=True, **kw)
                if c.choices and c.choices[0].logprobs for i in c.choices[0].logprobs.content]
    assert streamed == [i.token for i in content]
    no_lp = client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert no_lp.choices[0].logprobs is None


def test_several_prompts_stream_per_index(server: RunningServer) -> None:
    client = server.client()
    full = client.completions.create(model=server.model, prompt=PROMPTS[:2], max_tokens=8, temperature=0.7, n=2,
                                     seed=1)
    texts: dict[int, str] = {}
    for c in client.completions.create(model=server.model, prompt=PROMPTS[:2], max_tokens=8, temperature=0.7, n=2,
                                       seed=1, stream=True):
        for ch in c.choices:
            texts[ch.index] = texts.get(ch.index, "") + ch.text
    assert texts == {c.index: c.text for c in full.choices} and sorted(texts) == [0, 1, 2, 3]


def test_cors_preflight(server: RunningServer) -> None:
    from starlette.testclient import TestClient

    from vllm_core.entrypoints.openai.api_server import build_app
    from vllm_core.entrypoints.openai.serving_engine import ServerSettings

    app = build_app(server.engine, ServerSettings((server.model,)), cors={"origins": ["https://example.com"]})
    r = TestClient(app).options("/v1/completions", headers={
        "Origin": "https://example.com", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://example.com"
    server.engine.stat_loggers.pop()  # the extra app's metrics hooks
    server.engine.iteration_loggers.pop()
