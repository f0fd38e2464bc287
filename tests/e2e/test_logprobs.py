"""Logprobs end to end on a tiny float32 model: sampled-token and prompt logprobs equal
``log_softmax`` of ``transformers``' logits for the same tokens; ranks, top-k, cumulative sums,
the processed mode, chunked prefill and the prefix cache."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import random_prompts
from vllm_core import LLM, SamplingParams
from vllm_core.logprobs import Logprob

ATOL = 1e-5


def make_llm(tiny_models, **kwargs) -> LLM:  # type: ignore[no-untyped-def]
    path, _ = tiny_models["llama"]
    args = dict(dtype="float32", max_model_len=128, skip_tokenizer_init=True, num_gpu_blocks_override=64,
                block_size=8, use_tqdm_on_load=False)
    args.update(kwargs)
    return LLM(path, **args)


@pytest.fixture(scope="module")
def llm(tiny_models) -> LLM:  # type: ignore[no-untyped-def]
    return make_llm(tiny_models)


def ids(*prompts: list[int]) -> list[dict[str, list[int]]]:
    return [{"prompt_token_ids": p} for p in prompts]


def hf_logprobs(model, tokens: list[int]) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """[len(tokens), vocab] float32: log_softmax of transformers' logits at every position."""
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].float().log_softmax(dim=-1)


def check_position(entry: dict[int, Logprob], token: int, expected: torch.Tensor, k: int) -> None:
    """The token's logprob and rank, then the top-k ids, values and ranks 1..k."""
    assert token in entry
    assert entry[token].logprob == pytest.approx(float(expected[token]), abs=ATOL)
    assert entry[token].rank == int((expected >= expected[token]).sum())
    top = expected.topk(k)
    for rank, (tok, val) in enumerate(zip(top.indices.tolist(), top.values.tolist()), start=1):
        assert entry[tok].logprob == pytest.approx(val, abs=ATOL)
        assert entry[tok].rank == rank
    assert len(entry) in (k, k + 1)
    assert entry[token].decoded_token is None  # no tokenizer


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_sampled_logprobs_equal_transformers_log_softmax(llm: LLM, tiny_models, temperature: float) -> None:  # type: ignore[no-untyped-def]
    _, hf = tiny_models["llama"]
    prompts = random_prompts(3, 5, 25, 512, seed=31)
    params = SamplingParams(temperature=temperature, seed=5, max_tokens=8, ignore_eos=True, logprobs=5)
    for prompt, out in zip(prompts, llm.generate(ids(*prompts), params, use_tqdm=False)):
        comp = out.outputs[0]
        expected = hf_logprobs(hf, prompt + comp.token_ids)
        assert comp.logprobs is not None and len(comp.logprobs) == 8
        total = 0.0
        for i, (token, entry) in enumerate(zip(comp.token_ids, comp.logprobs)):
            row = expected[len(prompt) - 1 + i]
            check_position(entry, token, row, 5)
            total += float(row[token])
        assert comp.cumulative_logprob == pytest.approx(total, abs=1e-4)
        assert out.prompt_logprobs is None


def test_no_logprobs_unless_asked_and_zero_means_only_the_token(llm: LLM) -> None:
    p = random_prompts(1, 6, 6, 512, seed=32)[0]
    plain = llm.generate(ids(p), SamplingParams(temperature=0, max_tokens=4), use_tqdm=False)[0].outputs[0]
    assert plain.logprobs is None and plain.cumulative_logprob is None
    zero = llm.generate(ids(p), SamplingParams(temperature=0, max_tokens=4, logprobs=0), use_tqdm=False)[0].outputs[0]
    assert zero.logprobs is not None and [list(e) for e in zero.logprobs] == [[t] for t in zero.token_ids]
    assert all(e[t].rank == 1 for e, t in zip(zero.logprobs, zero.token_ids))  # greedy: the top token


def test_mixed_batch_asks_for_different_numbers(llm: LLM, tiny_models) -> None:  # type: ignore[no-untyped-def]
    _, hf = tiny_models["llama"]
    prompts = random_prompts(3, 4, 12, 512, seed=33)
    params = [SamplingParams(temperature=0, max_tokens=3, logprobs=k) for k in (2, None, 7)]
    outs = llm.generate(ids(*prompts), params, use_tqdm=False)
    assert outs[1].outputs[0].logprobs is None
    for k, out in ((2, outs[0]), (7, outs[2])):
        comp = out.outputs[0]
        expected = hf_logprobs(hf, out.prompt_token_ids + comp.token_ids)
        for i, token in enumerate(comp.token_ids):
            check_position(comp.logprobs[i], token, expected[len(out.prompt_token_ids) - 1 + i], k)  # type: ignore[index]


@pytest.mark.parametrize("engine", [{}, {"max_num_batched_tokens": 16}, {"enable_prefix_caching": True}],
                         ids=["plain", "chunked", "prefix"])
def test_prompt_logprobs_equal_transformers(tiny_models, engine: dict) -> None:  # type: ignore[no-untyped-def]
    _, hf = tiny_models["llama"]
    llm = make_llm(tiny_models, **engine)
    shared = random_prompts(1, 24, 24, 512, seed=34)[0]
    prompts = [shared + [7, 8], shared + [9], random_prompts(1, 40, 40, 512, seed=35)[0]]
    warm = llm.generate(ids(shared + [10, 11]), SamplingParams(temperature=0, max_tokens=2), use_tqdm=False)
    assert warm[0].finished  # the shared prefix is now in the prefix cache (when enabled)
    outs = llm.generate(ids(*prompts), SamplingParams(temperature=0, max_tokens=2, prompt_logprobs=3), use_tqdm=False)
    for prompt, out in zip(prompts, outs):
        plp = out.prompt_logprobs
        assert plp is not None and len(plp) == len(prompt) and plp[0] is None
        expected = hf_logprobs(hf, prompt)
        for pos in range(1, len(prompt)):
            check_position(plp[pos], prompt[pos], expected[pos - 1], 3)  # type: ignore[arg-type]
        assert out.outputs[0].logprobs is None


def test_processed_logprobs_mode(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """processed_logprobs: log_softmax after temperature and top-k, so only the top-k are finite."""
    _, hf = tiny_models["llama"]
    llm = make_llm(tiny_models, logprobs_mode="processed_logprobs")
    p = random_prompts(1, 10, 10, 512, seed=36)[0]
    out = llm.generate(ids(p), SamplingParams(temperature=0.5, top_k=4, seed=2, max_tokens=4, ignore_eos=True,
                                              logprobs=6), use_tqdm=False)[0].outputs[0]
    raw = hf_logprobs(hf, p + out.token_ids)
    for i, (token, entry) in enumerate(zip(out.token_ids, out.logprobs)):  # type: ignore[arg-type]
        logits = raw[len(p) - 1 + i] * 2.0  # log_softmax is logits up to a constant: scale by 1/T
        kth = logits.topk(4).values[-1]
        expected = logits.masked_fill(logits < kth, -math.inf).log_softmax(dim=-1)
        assert entry[token].logprob == pytest.approx(float(expected[token]), abs=1e-4)
        assert sum(math.isfinite(e.logprob) for e in entry.values()) == 4
        assert entry[token].rank <= 4


# --------------------------------------------------------------------- n, best_of, output kinds
def test_best_of_keeps_the_n_most_likely_of_its_samples(llm: LLM) -> None:
    """best_of=4, n=2 returns the two of the four seeded samples (seeds s..s+3, as n=4 draws
    them) with the highest cumulative logprob."""
    p = random_prompts(1, 8, 8, 512, seed=37)[0]
    base = SamplingParams(temperature=1.0, seed=11, max_tokens=6, ignore_eos=True)
    four = llm.generate(ids(p), base.clone(n=4, logprobs=0), use_tqdm=False)[0].outputs
    ranked = sorted(four, key=lambda c: c.cumulative_logprob, reverse=True)  # type: ignore[arg-type,return-value]
    best = llm.generate(ids(p), base.clone(n=2, best_of=4), use_tqdm=False)[0].outputs
    assert [c.token_ids for c in best] == [c.token_ids for c in ranked[:2]]
    assert [c.index for c in best] == [0, 1]
    assert best[0].cumulative_logprob == pytest.approx(ranked[0].cumulative_logprob, abs=1e-5)
    assert best[0].logprobs is None


@pytest.mark.parametrize("kind", ["CUMULATIVE", "DELTA", "FINAL_ONLY"])
def test_output_kinds_through_the_engine(llm: LLM, kind: str) -> None:
    from vllm_core import RequestOutputKind

    engine = llm.llm_engine
    p = random_prompts(1, 8, 8, 512, seed=38)[0]
    params = SamplingParams(n=2, temperature=1.0, seed=3, max_tokens=5, ignore_eos=True, logprobs=1,
                            output_kind=RequestOutputKind[kind])
    expected = llm.generate(ids(p), params, use_tqdm=False)[0]  # LLM.generate: the final result
    engine.add_request("kinds", {"prompt_token_ids": p}, params)
    outs = []
    while engine.has_unfinished_requests():
        outs += engine.step()
    assert outs[-1].finished and all(not o.finished for o in outs[:-1])
    if kind == "FINAL_ONLY":
        assert len(outs) == 1
    tokens: dict[int, list[int]] = {0: [], 1: []}
    logprobs: dict[int, list] = {0: [], 1: []}
    for o in outs:
        for c in o.outputs:
            if kind == "DELTA":
                tokens[c.index] += c.token_ids
                logprobs[c.index] += c.logprobs  # type: ignore[arg-type]
            else:
                tokens[c.index], logprobs[c.index] = c.token_ids, c.logprobs  # type: ignore[assignment]
    assert [tokens[0], tokens[1]] == [c.token_ids for c in expected.outputs]
    assert [len(logprobs[0]), len(logprobs[1])] == [5, 5]
