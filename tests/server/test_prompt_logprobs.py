"""Prompt logprobs as vLLM serves them, equal to the offline engine's ``prompt_logprobs``:
``echo=true, logprobs=N, max_tokens=0`` (lm-evaluation-harness's loglikelihood request), echo with
generation, the streamed echo chunk, and the ``prompt_logprobs`` extra field on completions and chat."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.server.conftest import TINY_ENGINE, RunningServer

PROMPT = "The capital of France is Paris, and the capital of Italy is"
TOL = 1e-4


@pytest.fixture(scope="module")
def offline(tiny_chat_model: str) -> Iterator[Any]:
    """The offline engine on the same model: the values the server must return."""
    from vllm_core import LLM

    llm = LLM(tiny_chat_model, use_tqdm_on_load=False, **TINY_ENGINE)
    yield llm
    del llm


def _offline_prompt_logprobs(llm: Any, ids: list[int], k: int) -> list[dict[int, Any] | None]:
    from vllm_core import SamplingParams

    (out,) = llm.generate({"prompt_token_ids": ids}, SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=k),
                          use_tqdm=False)
    return list(out.prompt_logprobs)


def _ids(server: RunningServer, text: str) -> list[int]:
    return list(httpx.post(f"{server.url}/tokenize", json={"prompt": text}, timeout=30).json()["tokens"])


def test_echo_max_tokens_zero_returns_prompt_logprobs(server: RunningServer, offline: Any) -> None:
    ids = _ids(server, PROMPT)
    want = _offline_prompt_logprobs(offline, ids, 2)
    r = server.client().completions.create(model=server.model, prompt=PROMPT, echo=True, logprobs=2, max_tokens=0)
    (c,) = r.choices
    assert c.text == PROMPT and r.usage.completion_tokens == 0 and r.usage.prompt_tokens == len(ids)
    lp = c.logprobs
    assert len(lp.tokens) == len(ids) and lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert "".join(lp.tokens) == offline.get_tokenizer().decode(ids)
    for pos in range(1, len(ids)):
        assert lp.token_logprobs[pos] == pytest.approx(want[pos][ids[pos]].logprob, abs=TOL), pos
        assert len(lp.top_logprobs[pos]) == 2
        best = max(want[pos].values(), key=lambda x: x.logprob)
        assert max(lp.top_logprobs[pos].values()) == pytest.approx(best.logprob, abs=TOL)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(ids))]


def test_echo_with_generation_and_prompt_logprobs_field(server: RunningServer, offline: Any) -> None:
    ids = _ids(server, PROMPT)
    want = _offline_prompt_logprobs(offline, ids, 3)
    r = server.client().completions.create(model=server.model, prompt=PROMPT, echo=True, logprobs=1, max_tokens=4,
                                           temperature=0, extra_body={"prompt_logprobs": 3})
    (c,) = r.choices
    assert c.text.startswith(PROMPT) and len(c.logprobs.tokens) == len(ids) + 4
    assert c.logprobs.token_logprobs[0] is None and None not in c.logprobs.token_logprobs[1:]
    plp = c.model_extra["prompt_logprobs"]
    assert len(plp) == len(ids) and plp[0] is None
    for pos in range(1, len(ids)):
        got = {int(t): v["logprob"] for t, v in plp[pos].items()}
        assert set(got) == set(want[pos]), pos
        for t, x in want[pos].items():
            assert got[t] == pytest.approx(x.logprob, abs=TOL)
            assert plp[pos][str(t)]["rank"] == x.rank


def test_streamed_echo_chunk_carries_prompt_logprobs(server: RunningServer) -> None:
    body = {"model": server.model, "prompt": PROMPT, "echo": True, "logprobs": 2, "max_tokens": 0}
    full = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).json()["choices"][0]
    events = []
    with httpx.stream("POST", f"{server.url}/v1/completions", json={**body, "stream": True}, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    first = events[0]["choices"][0]
    assert first["text"] == PROMPT and first["logprobs"] == full["logprobs"]
    assert "".join(e["choices"][0]["text"] for e in events if e["choices"]) == PROMPT
    assert events[-1]["choices"][0]["finish_reason"] is not None


def test_chat_prompt_logprobs(server: RunningServer, offline: Any) -> None:
    messages = [{"role": "user", "content": "Name a colour."}]
    ids = list(httpx.post(f"{server.url}/tokenize", json={"messages": messages}, timeout=30).json()["tokens"])
    want = _offline_prompt_logprobs(offline, ids, 1)
    r = server.client().chat.completions.create(model=server.model, messages=messages, max_tokens=2,
                                                extra_body={"prompt_logprobs": 1})
    plp = r.model_extra["prompt_logprobs"]
    assert len(plp) == len(ids) == r.usage.prompt_tokens and plp[0] is None
    for pos in range(1, len(ids)):
        assert plp[pos][str(ids[pos])]["logprob"] == pytest.approx(want[pos][ids[pos]].logprob, abs=TOL)
