"""vLLM's request rules, through the official client: greedy sampling with ``n > 1``, 64-bit
seeds (``-1`` = no seed), ``stream_options`` only with ``stream``, and the length rule (a prompt
plus ``max_tokens`` must fit ``max_model_len``; ``max_tokens`` alone above it is named as such;
without ``max_tokens`` the output is clamped to the room left)."""

from __future__ import annotations

import openai
import pytest

from tests.server.conftest import RunningServer


def test_greedy_with_several_samples_is_refused(server: RunningServer) -> None:
    client = server.client()
    with pytest.raises(openai.BadRequestError, match="n must be 1 when using greedy sampling, got 2"):
        client.completions.create(model=server.model, prompt="hi", max_tokens=2, temperature=0, n=2)
    with pytest.raises(openai.BadRequestError, match="n must be 1 when using greedy sampling"):
        client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=2, temperature=0, n=3)
    ok = client.completions.create(model=server.model, prompt="hi", max_tokens=2, temperature=0.5, n=2)
    assert len(ok.choices) == 2


@pytest.mark.parametrize("seed", [2**63, 2**64, -(2**63) - 1])
def test_seeds_outside_64_bits_are_refused(server: RunningServer, seed: int) -> None:
    with pytest.raises(openai.BadRequestError, match="seed"):
        server.client().completions.create(model=server.model, prompt="hi", max_tokens=2, seed=seed)


def test_seed_edges_and_minus_one(server: RunningServer) -> None:
    client = server.client()
    for seed in (2**63 - 1, -(2**63)):
        a = client.completions.create(model=server.model, prompt="hi", max_tokens=6, seed=seed)
        b = client.completions.create(model=server.model, prompt="hi", max_tokens=6, seed=seed)
        assert a.choices[0].text == b.choices[0].text
    texts = {client.completions.create(model=server.model, prompt="hi", max_tokens=12, seed=-1).choices[0].text
             for _ in range(4)}
    assert len(texts) > 1, "seed=-1 means unseeded (vLLM), so samples differ"


def test_stream_options_need_stream(server: RunningServer) -> None:
    client = server.client()
    with pytest.raises(openai.BadRequestError, match="stream=True"):
        client.completions.create(model=server.model, prompt="hi", max_tokens=2,
                                  stream_options={"include_usage": True})
    with pytest.raises(openai.BadRequestError, match="stream=True"):
        client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=2, stream_options={"include_usage": True})


def test_length_rule(server: RunningServer) -> None:
    client = server.client()
    limit = server.engine.max_model_len
    with pytest.raises(openai.BadRequestError, match=f"max_tokens={limit + 1} cannot be greater than max_model_len"):
        client.completions.create(model=server.model, prompt="hi", max_tokens=limit + 1)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model=server.model, prompt="hi " * 100, max_tokens=limit - 10)
    # No max_tokens (chat): clamped to what is left of the model length.
    r = client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "hi"}],
                                       extra_body={"ignore_eos": True})
    assert r.usage.prompt_tokens + r.usage.completion_tokens == limit and r.choices[0].finish_reason == "length"
