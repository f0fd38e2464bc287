"""Greedy token ids from ``LLM.generate`` equal transformers' greedy ``generate`` for tiny
random-weight llama / mistral / qwen2 / qwen3 checkpoints, under every engine setting."""

from __future__ import annotations

import pytest

from tests.conftest import ARCHS, hf_greedy, installed_platforms, random_prompts
from tests.e2e.settings import SETTINGS, assert_speculation_ran, engine_args
from vllm_core import LLM, SamplingParams

NEW_TOKENS = 48
MAX_MODEL_LEN = 192


@pytest.fixture(scope="module")
def oracle(tiny_models):  # type: ignore[no-untyped-def]
    """(arch, prompt kind) -> (prompts, transformers' greedy outputs), computed once."""
    cache: dict[tuple[str, bool], tuple[list[list[int]], list[list[int]]]] = {}

    def get(arch: str, shared_prefix: bool) -> tuple[list[list[int]], list[list[int]]]:
        key = (arch, shared_prefix)
        if key not in cache:
            _, hf = tiny_models[arch]
            prefix = random_prompts(1, 40, 40, 512, seed=99)[0] if shared_prefix else None
            prompts = random_prompts(16, 3, 60, 512, seed=1, prefix=prefix)
            cache[key] = (prompts, [hf_greedy(hf, p, NEW_TOKENS) for p in prompts])
        return cache[key]

    return get


@pytest.mark.parametrize("device", installed_platforms())
@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_matches_transformers(tiny_models, oracle, arch: str, setting: str, device: str) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_models[arch]
    spec = SETTINGS[setting]
    prompts, expected = oracle(arch, spec.get("shared_prefix", False))
    if not spec["batch"]:
        prompts, expected = prompts[:1], expected[:1]
    engine = {"num_gpu_blocks_override": 256, **engine_args(setting, path)}
    llm = LLM(path, dtype="float32", device=device, max_model_len=MAX_MODEL_LEN, skip_tokenizer_init=True,
              enable_prefix_caching=engine.pop("enable_prefix_caching", False), use_tqdm_on_load=False, **engine)
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True, detokenize=False)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    got = [o.outputs[0].token_ids for o in outs]
    assert len(expected[0]) == NEW_TOKENS
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"{arch}/{setting}/{device}: prompt {i} differs\n ours: {g}\n   hf: {e}"
    assert all(o.prompt_token_ids == p for o, p in zip(outs, prompts))
    core = llm.llm_engine.core
    if setting in ("preempt", "draft"):
        assert core.scheduler.num_preemptions > 0, "the KV cache was meant to be too small"
    if setting == "prefix":
        assert sum(o.num_cached_tokens for o in outs) >= 15 * 40 - 15 * 8
    if setting == "chunked":
        assert core.scheduler.max_num_batched_tokens == 16
    if setting in ("ngram", "draft"):
        assert_speculation_ran(core)
