"""Speculative decoding through a real server: vLLM's ``vllm:spec_decode_*`` counters on
``/metrics`` match the engine core's own counts, and the target drafting for itself has every
draft accepted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server.conftest import TINY_ENGINE, RunningServer, engine_stats, read_metrics, start_server


@pytest.fixture(scope="module")
def spec_server(tiny_chat_model: str) -> Iterator[RunningServer]:
    spec = {"method": "draft_model", "model": tiny_chat_model, "num_speculative_tokens": 3}
    srv = start_server(tiny_chat_model, {**TINY_ENGINE, "speculative_config": spec})
    yield srv
    srv.stop()


def test_spec_decode_counters_on_metrics(spec_server: RunningServer) -> None:
    client = spec_server.client()
    for prompt in ["one two three one two three", "a b c d a b c d"]:
        client.completions.create(model=spec_server.model, prompt=prompt, max_tokens=24, temperature=0,
                                  extra_body={"ignore_eos": True})
    stats = engine_stats(spec_server).spec_decode
    assert stats is not None and stats.num_draft_tokens > 0
    metrics = read_metrics(spec_server.url)
    assert metrics["vllm:spec_decode_num_drafts_total"] == stats.num_drafts
    assert metrics["vllm:spec_decode_num_draft_tokens_total"] == stats.num_draft_tokens
    assert metrics["vllm:spec_decode_num_accepted_tokens_total"] == stats.num_accepted_tokens
    assert stats.num_accepted_tokens == stats.num_draft_tokens  # the target drafts for itself
    name = 'vllm:spec_decode_num_accepted_tokens_per_pos_total{engine="0",model_name="test-model",position="0"}'
    assert metrics[name] == stats.accepted_per_pos[0] == stats.num_drafts
    # a second scrape adds nothing new
    again = read_metrics(spec_server.url)
    assert again["vllm:spec_decode_num_draft_tokens_total"] == stats.num_draft_tokens
