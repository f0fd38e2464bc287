"""``AsyncLLM``: the engine core runs in its own process; outputs stream; abort frees KV at once."""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.server.conftest import TINY_ENGINE
from vllm_core import SamplingParams
from vllm_core.engine.async_llm import AsyncLLM
from vllm_core.engine.core_client import EngineDeadError
from vllm_core.entrypoints.llm import build_engine_config
from vllm_core.errors import RequestError


def test_streams_from_a_separate_process_and_abort_frees_blocks(tiny_chat_model: str) -> None:
    async def main() -> None:
        engine = await AsyncLLM.create(build_engine_config(tiny_chat_model, **TINY_ENGINE))
        try:
            assert engine.client.proc.pid != os.getpid() and engine.client.proc.is_alive()
            greedy = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
            seen = [out async for out in engine.generate("Hello there", greedy)]
            assert seen[-1].finished and len(seen[-1].outputs[0].token_ids) == 12
            assert len(seen) > 1, "outputs must stream, not arrive once at the end"
            lengths = [len(o.outputs[0].token_ids) for o in seen]
            assert lengths == sorted(lengths)

            # A long request holds blocks; closing its iterator aborts it and frees them at once.
            total = (await engine.get_stats()).num_kv_blocks
            long = SamplingParams(max_tokens=200, temperature=0, ignore_eos=True)
            gen = engine.generate("x " * 60, long)
            async for out in gen:
                if len(out.outputs[0].token_ids) >= 3:
                    break
            held = await engine.get_stats()
            assert held.num_free_kv_blocks < total and held.num_running == 1
            await gen.aclose()
            freed = await engine.get_stats()
            assert freed.num_free_kv_blocks == total and freed.num_running == 0 and freed.num_waiting == 0

            with pytest.raises(RequestError, match="max_model_len"):
                engine.submit("y " * 400, greedy)
            assert engine.streams == {}
        finally:
            await engine.shutdown()
        assert not engine.client.proc.is_alive()

    asyncio.run(main())


def test_engine_death_fails_requests_fast(tiny_chat_model: str) -> None:
    async def main() -> None:
        engine = await AsyncLLM.create(build_engine_config(tiny_chat_model, **TINY_ENGINE))
        try:
            gen = engine.generate("Hi", SamplingParams(max_tokens=200, temperature=0, ignore_eos=True))
            await gen.__anext__()
            engine.client.proc.kill()
            with pytest.raises(EngineDeadError):
                async for _ in gen:
                    pass
            assert not engine.is_running and "died" in (engine.dead_reason or "")
            with pytest.raises(EngineDeadError):
                engine.submit("Hi", SamplingParams(max_tokens=2))
        finally:
            await engine.shutdown()

    asyncio.run(asyncio.wait_for(main(), 120))
