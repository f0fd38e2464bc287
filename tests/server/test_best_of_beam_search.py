"""``best_of`` and ``use_beam_search`` through a real server and the official ``openai`` client:
best_of keeps the n most likely of its samples, beam search gives ``LLM.beam_search``'s beams,
and the combinations neither can honour are 400s that say why."""

from __future__ import annotations

import math
from typing import Any

import openai
import pytest

from tests.server.conftest import TINY_ENGINE, RunningServer, engine_stats
from vllm_core import LLM, BeamSearchParams
from vllm_core.beam_search import BeamSearchSequence
from vllm_core.tokenizers.chat import apply_chat_template

PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def offline(tiny_chat_model: str) -> LLM:
    return LLM(tiny_chat_model, use_tqdm_on_load=False, **TINY_ENGINE)


def cumulative(choice: Any) -> float:
    return math.fsum(choice.logprobs.token_logprobs)


def generated(offline: LLM, prompt_ids: list[int], seq: BeamSearchSequence) -> tuple[list[int], str]:
    """A beam's generated tokens and text as the server shows them (a final EOS left out)."""
    tokens = seq.tokens[len(prompt_ids):]
    if seq.finish_reason == "stop":
        tokens = tokens[:-1]
    return tokens, offline.get_tokenizer().decode(tokens, skip_special_tokens=True)


def assert_no_requests_left(server: RunningServer) -> None:
    stats = engine_stats(server)
    assert not server.engine.streams and stats.num_running == 0 and stats.num_waiting == 0


# ------------------------------------------------------------------------------------ best_of
def test_best_of_returns_the_n_highest_cumulative_logprob_samples(server: RunningServer) -> None:
    """best_of=4, n=2 draws the same four seeded samples as n=4 (seeds s..s+3) and returns the
    two whose summed token logprobs are highest, best first."""
    client = server.client()
    kw: dict[str, Any] = dict(model=server.model, prompt=PROMPT, max_tokens=6, temperature=1.0, seed=11, logprobs=0,
                              extra_body={"ignore_eos": True})
    four = client.completions.create(n=4, **kw).choices
    ranked = sorted(four, key=cumulative, reverse=True)
    assert len({c.text for c in four}) == 4  # four distinct samples, so the ranking is meaningful
    best = client.completions.create(n=2, best_of=4, **kw)
    assert [c.index for c in best.choices] == [0, 1]
    assert [c.text for c in best.choices] == [c.text for c in ranked[:2]]
    assert [cumulative(c) for c in best.choices] == pytest.approx([cumulative(c) for c in ranked[:2]], abs=1e-4)
    assert cumulative(best.choices[1]) >= cumulative(ranked[2]) - 1e-6
    assert best.usage.completion_tokens == 12


def test_best_of_with_several_prompts_indexes_choices_per_prompt(server: RunningServer) -> None:
    client = server.client()
    resp = client.completions.create(model=server.model, prompt=[PROMPT, "Once upon a time"], max_tokens=4, n=2,
                                     best_of=3, temperature=1.0, seed=5)
    assert sorted(c.index for c in resp.choices) == [0, 1, 2, 3]
    assert all(c.logprobs is None for c in resp.choices)  # ranked on logprobs it did not ask to see


def test_best_of_equal_to_n_still_streams(server: RunningServer) -> None:
    client = server.client()
    chunks = list(client.completions.create(model=server.model, prompt=PROMPT, max_tokens=6, n=2, best_of=2,
                                            temperature=1.0, seed=3, stream=True))
    assert len(chunks) > 2  # token by token, not one event


def test_stream_with_best_of_above_n_sends_the_whole_response_once(server: RunningServer) -> None:
    """vLLM does not stream choices that are ranked at the end: one event with all of them."""
    client = server.client()
    kw: dict[str, Any] = dict(model=server.model, prompt=PROMPT, max_tokens=5, n=2, best_of=3, temperature=1.0, seed=9)
    full = client.completions.create(**kw)
    chunks = list(client.completions.create(stream=True, **kw))
    assert len(chunks) == 1
    assert [c.text for c in chunks[0].choices] == [c.text for c in full.choices]
    assert [c.finish_reason for c in chunks[0].choices] == ["length", "length"]


@pytest.mark.parametrize(("body", "param", "message"), [
    ({"n": 3, "best_of": 2}, "best_of", "best_of must be greater than or equal to n, got n=3 and best_of=2"),
    ({"best_of": 0}, "best_of", "best_of must be greater than or equal to n, got n=1 and best_of=0"),
    ({"n": 2, "best_of": 200}, "best_of", "best_of * number of prompts = 200 exceeds this server's limit 128"),
    ({"length_penalty": 0.5}, None, "length_penalty=0.5 only applies with use_beam_search=true"),
    ({"use_beam_search": True, "n": 2, "temperature": 0.8}, None, "use_beam_search does not support temperature"),
    ({"use_beam_search": True, "n": 2, "stop": ["x"], "top_p": 0.5}, None,
     "use_beam_search does not support top_p, stop: beams follow the model's raw logprobs"),
    ({"use_beam_search": True, "n": 2, "logprobs": 5}, "logprobs",
     "with use_beam_search, logprobs can be at most 2 * beam width = 4"),
    ({"use_beam_search": True, "n": 11}, None, "beam_width=11 needs 22 logprobs per step but max_logprobs is 20"),
])
def test_bad_combinations_are_400s(server: RunningServer, body: dict[str, Any], param: str | None,
                                   message: str) -> None:
    client = server.client()
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=server.model, prompt=PROMPT, max_tokens=4, extra_body=body)
    err = exc.value.body
    assert isinstance(err, dict) and message in err["message"], err
    assert exc.value.status_code == 400 and err.get("param") == param
    assert_no_requests_left(server)


# -------------------------------------------------------------------------------- beam search
@pytest.mark.parametrize(("width", "length_penalty"), [(2, 1.0), (3, 0.5)])
def test_use_beam_search_equals_llm_beam_search(server: RunningServer, offline: LLM, width: int,
                                                length_penalty: float) -> None:
    prompt_ids = offline.get_tokenizer().encode(PROMPT)
    expected = offline.beam_search({"prompt": PROMPT}, BeamSearchParams(
        beam_width=width, max_tokens=8, ignore_eos=True, length_penalty=length_penalty))[0].sequences
    resp = server.client().completions.create(
        model=server.model, prompt=PROMPT, max_tokens=8, n=width, temperature=0, logprobs=1,
        extra_body={"use_beam_search": True, "ignore_eos": True, "length_penalty": length_penalty})
    assert [c.index for c in resp.choices] == list(range(width))
    for choice, seq in zip(resp.choices, expected):
        tokens, text = generated(offline, prompt_ids, seq)
        assert choice.text == text and choice.finish_reason == "length"
        assert len(choice.logprobs.token_logprobs) == len(tokens) == 8
        assert cumulative(choice) == pytest.approx(seq.cum_logprob, abs=1e-4)
    assert len({c.text for c in resp.choices}) == width
    assert resp.usage.completion_tokens == 8 * width
    assert_no_requests_left(server)


def test_beam_search_stops_at_eos_like_llm_beam_search(server: RunningServer, offline: LLM) -> None:
    """Without ignore_eos, beams ending in EOS complete early; the server drops the EOS from the text."""
    prompts = ["Hello", "1, 2, 3,"]
    params = BeamSearchParams(beam_width=2, max_tokens=12)
    expected = offline.beam_search([{"prompt": p} for p in prompts], params)
    resp = server.client().completions.create(model=server.model, prompt=prompts, max_tokens=12, n=2,
                                              extra_body={"use_beam_search": True})
    tok = offline.get_tokenizer()
    got = sorted(resp.choices, key=lambda c: c.index)
    want = [generated(offline, tok.encode(p), s)[1] for p, out in zip(prompts, expected) for s in out.sequences]
    assert [c.text for c in got] == want
    assert [c.finish_reason for c in got] == [s.finish_reason for out in expected for s in out.sequences]


def test_beam_width_is_best_of_and_the_n_best_come_back(server: RunningServer, offline: LLM) -> None:
    """As vLLM's first API: best_of beams are searched and the n best returned."""
    expected = offline.beam_search({"prompt": PROMPT}, BeamSearchParams(beam_width=4, max_tokens=6,
                                                                        ignore_eos=True))[0].sequences
    resp = server.client().completions.create(model=server.model, prompt=PROMPT, max_tokens=6, n=2, best_of=4,
                                              extra_body={"use_beam_search": True, "ignore_eos": True})
    prompt_ids = offline.get_tokenizer().encode(PROMPT)
    assert [c.text for c in resp.choices] == [generated(offline, prompt_ids, s)[1] for s in expected[:2]]


def test_beam_search_stream_sends_one_event_and_echo_prefixes(server: RunningServer) -> None:
    client = server.client()
    kw: dict[str, Any] = dict(model=server.model, prompt=PROMPT, max_tokens=5, n=2,
                              extra_body={"use_beam_search": True, "ignore_eos": True})
    full = client.completions.create(**kw)
    chunks = list(client.completions.create(stream=True, **kw))
    assert len(chunks) == 1 and [c.text for c in chunks[0].choices] == [c.text for c in full.choices]
    echoed = client.completions.create(echo=True, **kw)
    assert [c.text for c in echoed.choices] == [PROMPT + c.text for c in full.choices]


def test_chat_use_beam_search_equals_llm_beam_search(server: RunningServer, offline: LLM) -> None:
    messages = [{"role": "user", "content": "Name a colour."}]
    tok = offline.get_tokenizer()
    prompt_ids = tok.encode(apply_chat_template(tok, messages, None, True, None), add_special_tokens=False)
    expected = offline.beam_search({"prompt_token_ids": prompt_ids},
                                   BeamSearchParams(beam_width=2, max_tokens=6, ignore_eos=True))[0].sequences
    client = server.client()
    kw: dict[str, Any] = dict(model=server.model, messages=messages, max_tokens=6, n=2,
                              extra_body={"use_beam_search": True, "ignore_eos": True})
    resp = client.chat.completions.create(**kw)
    assert [c.message.content for c in resp.choices] == [generated(offline, prompt_ids, s)[1] for s in expected]
    streamed: dict[int, str] = {}
    for chunk in client.chat.completions.create(stream=True, **kw):
        for c in chunk.choices:
            streamed[c.index] = streamed.get(c.index, "") + (c.delta.content or "")
    assert [streamed[i] for i in range(2)] == [c.message.content for c in resp.choices]
    with pytest.raises(openai.BadRequestError, match="use_beam_search cannot be combined with response_format"):
        client.chat.completions.create(response_format={"type": "json_object"}, **kw)
    assert_no_requests_left(server)
