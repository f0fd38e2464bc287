"""64 concurrent streaming clients, a quarter of which disconnect mid-stream: the rest finish with
the same greedy text as alone, and afterwards every KV block is free and nothing is running."""

from __future__ import annotations

import asyncio
import time

from tests.server.conftest import RunningServer, read_metrics

NUM_CLIENTS = 64
MAX_TOKENS = 24
DISCONNECT_MAX_TOKENS = 200
PROMPTS = [f"Request number {i}: tell me about topic {i * 7}" for i in range(8)]


def test_64_streaming_clients_with_disconnects(server: RunningServer) -> None:
    client = server.client()
    expected = {
        p: client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": p}],
                                          max_tokens=MAX_TOKENS, temperature=0).choices[0].message.content
        for p in PROMPTS
    }

    async def one(i: int) -> tuple[int, str | None, str | None]:
        aclient = server.async_client()
        prompt = PROMPTS[i % len(PROMPTS)]
        disconnect = i % 4 == 0
        # a client that leaves asks for far more tokens than it reads, so its request is still
        # running when the server sees it go, however fast the platform
        stream = await aclient.chat.completions.create(
            model=server.model, messages=[{"role": "user", "content": prompt}],
            max_tokens=DISCONNECT_MAX_TOKENS if disconnect else MAX_TOKENS, temperature=0, stream=True,
            extra_body={"ignore_eos": True} if disconnect else None)
        text, finish, n = "", None, 0
        async for chunk in stream:
            n += 1
            if disconnect and n == 3:
                await stream.close()
                await aclient.close()
                return i, None, None
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                finish = chunk.choices[0].finish_reason or finish
        await aclient.close()
        return i, text, finish

    async def run_all() -> list[tuple[int, str | None, str | None]]:
        return await asyncio.gather(*(one(i) for i in range(NUM_CLIENTS)))

    results = asyncio.run(run_all())
    completed = [(i, text, finish) for i, text, finish in results if text is not None]
    assert len(completed) == NUM_CLIENTS - NUM_CLIENTS // 4
    for i, text, finish in completed:
        assert text == expected[PROMPTS[i % len(PROMPTS)]], i
        assert finish in ("length", "stop")

    deadline = time.monotonic() + 30
    while True:
        m = read_metrics(server.url)
        idle = m["vllm:num_requests_running"] == 0 and m["vllm:num_requests_waiting"] == 0
        if (idle and m["vllm:num_free_kv_cache_blocks"] == m["vllm:num_kv_cache_blocks"]) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert m["vllm:num_requests_running"] == 0 and m["vllm:num_requests_waiting"] == 0
    assert m["vllm:num_free_kv_cache_blocks"] == m["vllm:num_kv_cache_blocks"]
    assert m["vllm:kv_cache_usage_perc"] == 0
    assert m['vllm:request_success_total{engine="0",finished_reason="abort",model_name="test-model"}'] >= NUM_CLIENTS // 4
    assert server.engine.streams == {} and server.engine.output_processor.requests == {}
