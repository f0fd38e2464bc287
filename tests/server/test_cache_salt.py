"""vLLM's ``cache_salt`` request field through a real server: requests with different salts
never share prefix-cache blocks, equal salts do; a bad salt is a 400."""

from __future__ import annotations

import httpx

from tests.server.conftest import RunningServer, read_metrics

PROMPT = list(range(100, 180))  # 80 tokens: five 16-token blocks


def hits(server: RunningServer) -> float:
    return read_metrics(server.url)["vllm:prefix_cache_hits_total"]


def complete(server: RunningServer, **extra: object) -> None:
    client = server.client()
    client.completions.create(model=server.model, prompt=PROMPT, max_tokens=2, temperature=0, extra_body=extra)


def test_different_salts_share_no_blocks_equal_salts_do(server: RunningServer) -> None:
    complete(server, cache_salt="salt-one")
    before = hits(server)
    complete(server, cache_salt="salt-two")
    assert hits(server) == before, "a request with another salt hit the first one's blocks"
    complete(server, cache_salt="salt-one")
    assert hits(server) == before + 64  # every full block but the last


def test_chat_takes_cache_salt_and_bad_salts_are_400(server: RunningServer) -> None:
    client = server.client()
    messages = [{"role": "user", "content": "tell me a story about a cat " * 6}]
    client.chat.completions.create(model=server.model, messages=messages, max_tokens=2, extra_body={"cache_salt": "a"})
    before = hits(server)
    client.chat.completions.create(model=server.model, messages=messages, max_tokens=2, extra_body={"cache_salt": "b"})
    assert hits(server) == before
    r = httpx.post(f"{server.url}/v1/completions", json={"model": server.model, "prompt": "hi", "cache_salt": ""},
                   timeout=30)
    assert r.status_code == 400 and "cache_salt" in r.json()["error"]["message"]
