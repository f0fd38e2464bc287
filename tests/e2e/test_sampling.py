"""Sampling end to end on a tiny random-weight model: penalties against ``transformers``'
generate, the engine's draws against the model's next-token distribution (chi-square), seeds
independent of the batch, masks and biases."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import random_prompts
from vllm_core import LLM, SamplingParams

stats = pytest.importorskip("scipy.stats")


@pytest.fixture(scope="module")
def llm(tiny_models) -> LLM:  # type: ignore[no-untyped-def]
    path, _ = tiny_models["llama"]
    return LLM(path, dtype="float32", max_model_len=128, skip_tokenizer_init=True,
               num_gpu_blocks_override=256, block_size=8, use_tqdm_on_load=False)


def ids(*prompts: list[int]) -> list[dict[str, list[int]]]:
    return [{"prompt_token_ids": p} for p in prompts]


def hf_generate(model, prompt: list[int], max_new_tokens: int, **kwargs) -> list[int]:  # type: ignore[no-untyped-def]
    from transformers import GenerationConfig

    gc = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0, **kwargs)
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None
    try:
        with torch.no_grad():
            x = torch.tensor([prompt])
            out = model.generate(x, attention_mask=torch.ones_like(x), generation_config=gc)
    finally:
        model.generation_config.eos_token_id = saved
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("penalty", [1.5, 0.7])
def test_repetition_penalty_matches_transformers_generate(llm: LLM, tiny_models, penalty: float) -> None:  # type: ignore[no-untyped-def]
    _, hf = tiny_models["llama"]
    prompts = random_prompts(3, 4, 20, 512, seed=21)
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True, repetition_penalty=penalty)
    outs = llm.generate(ids(*prompts), params, use_tqdm=False)
    plain = llm.generate(ids(prompts[0]), params.clone(repetition_penalty=1.0), use_tqdm=False)[0]
    for prompt, out in zip(prompts, outs):
        assert out.outputs[0].token_ids == hf_generate(hf, prompt, 16, repetition_penalty=penalty)
    assert plain.outputs[0].token_ids != outs[0].outputs[0].token_ids


def test_engine_draws_follow_the_model_distribution(llm: LLM, tiny_models) -> None:  # type: ignore[no-untyped-def]
    """2,000 seeded samples of the first token at temperature 0.25 / top-k 6 against the softmax of
    transformers' logits under the same warpers; a wrong temperature fails the same test."""
    from transformers import TopKLogitsWarper

    _, hf = tiny_models["llama"]
    prompt = random_prompts(1, 6, 6, 512, seed=22)[0]
    with torch.no_grad():
        logits = hf(torch.tensor([prompt])).logits[0, -1].double()

    def expected(temperature: float) -> torch.Tensor:
        return TopKLogitsWarper(6)(None, (logits / temperature).unsqueeze(0))[0].softmax(-1)

    n = 2000
    out = llm.generate(ids(prompt), SamplingParams(n=n, temperature=0.25, top_k=6, seed=0, max_tokens=1),
                       use_tqdm=False)[0]
    counts = torch.bincount(torch.tensor([c.token_ids[0] for c in out.outputs]), minlength=logits.shape[0]).double()

    def p_value(probs: torch.Tensor) -> float:
        support = probs > 0
        assert counts[~support].sum() == 0
        exp = probs[support] / probs[support].sum() * n
        return float(stats.chisquare(counts[support].numpy(), exp.numpy()).pvalue)

    assert p_value(expected(0.25)) > 1e-3
    assert p_value(expected(0.5)) < 1e-6


def test_seeded_penalised_request_is_batch_independent(llm: LLM) -> None:
    p = random_prompts(1, 10, 10, 512, seed=23)[0]
    params = SamplingParams(temperature=1.0, seed=4321, max_tokens=16, ignore_eos=True, repetition_penalty=1.2,
                            frequency_penalty=0.5, presence_penalty=0.3, logit_bias={7: 1.5})
    alone = llm.generate(ids(p), params, use_tqdm=False)[0].outputs[0].token_ids
    others = random_prompts(4, 3, 40, 512, seed=24)
    batch_params = [SamplingParams(temperature=0.8, max_tokens=12, presence_penalty=1.0),
                    SamplingParams(temperature=0, max_tokens=20, allowed_token_ids=[5, 6, 7]),
                    SamplingParams(temperature=1.1, max_tokens=16, seed=3, repetition_penalty=2.0),
                    SamplingParams(temperature=0, max_tokens=5)]
    mixed = llm.generate(ids(*others[:3], p, others[3]), [*batch_params[:3], params, batch_params[3]],
                         use_tqdm=False)[3].outputs[0].token_ids
    assert alone == mixed


def test_logit_bias_allowed_tokens_and_frequency_penalty(llm: LLM) -> None:
    p = random_prompts(1, 8, 8, 512, seed=25)[0]
    base = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)
    forced = llm.generate(ids(p), base.clone(logit_bias={42: 100.0}), use_tqdm=False)[0].outputs[0].token_ids
    assert forced == [42] * 10
    # the same bias with a strong frequency penalty cannot repeat 42 forever
    tempered = llm.generate(ids(p), base.clone(logit_bias={42: 3.0}, frequency_penalty=2.0, presence_penalty=2.0),
                            use_tqdm=False)[0].outputs[0].token_ids
    assert tempered.count(42) < 10
    allowed = llm.generate(ids(p), base.clone(temperature=1.0, seed=1, allowed_token_ids=[3, 4, 500]),
                           use_tqdm=False)[0].outputs[0].token_ids
    assert set(allowed) <= {3, 4, 500}


class WordTokenizer:
    """Encodes the words it knows (a bad word's token ids), nothing else."""

    def __init__(self, words: dict[str, list[int]]) -> None:
        self.words = words

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.words.get(text, []))


def test_penalties_and_bad_words_see_the_token_in_flight_with_async_scheduling(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """With async scheduling the newest token is still on the device when the next step is
    built; penalties and bad words must count it all the same."""
    path, _ = tiny_models["llama"]
    prompts = random_prompts(3, 5, 12, 512, seed=26)
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, repetition_penalty=1.5,
                            frequency_penalty=2.0, presence_penalty=2.0, logit_bias={42: 6.0})
    runs = []
    for async_scheduling in (False, True):
        llm = LLM(path, dtype="float32", max_model_len=128, skip_tokenizer_init=True, num_gpu_blocks_override=64,
                  block_size=8, use_tqdm_on_load=False, async_scheduling=async_scheduling)
        runs.append([o.outputs[0].token_ids for o in llm.generate(ids(*prompts), params, use_tqdm=False)])
        assert runs[-1] == runs[0], f"async_scheduling={async_scheduling}: {runs}"
        engine = llm.llm_engine
        # a bad word made of the first two greedy tokens of the first prompt: never completed
        first = runs[0][0][:2]
        engine.input_processor.tokenizer = WordTokenizer({"x": first})
        bad = params.clone(bad_words=["x"])
        engine.add_request("bad", {"prompt_token_ids": prompts[0]}, bad)
        out = []
        while engine.has_unfinished_requests():
            out += engine.step()
        got = out[-1].outputs[0].token_ids
        assert got[0] == first[0] and got[1] != first[1], async_scheduling
    assert runs[0] == runs[1], runs
    assert all(run[0] == 42 and run[1] != 42 for run in runs[0])  # the bias wins once, then the penalties
