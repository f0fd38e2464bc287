"""Penalties, logit bias, allowed tokens, bad words and min_tokens of the batched sampler, each
against ``transformers``' logits processor on random logits (one row at a time there, one batch
here), then the whole pipeline."""

from __future__ import annotations

import random

import pytest
import torch

from tests.core.test_sampler import CPU, make_row, random_logits
from vllm_core.core.sched_output import ScheduledRequest
from vllm_core.sample.metadata import SamplingMetadata
from vllm_core.sample.sampler import ReferenceSampler, apply_logits_processors
from vllm_core.sampling_params import SamplingParams

transformers = pytest.importorskip("transformers")

VOCAB = 512


def row(params: SamplingParams, prompt: list[int] | None = None, output: list[int] | None = None,
        eos: int | None = None) -> ScheduledRequest:
    r = make_row(params, num_output_tokens=len(output or []), eos_token_id=eos)
    r.prompt_token_ids, r.output_token_ids = prompt or [], output or []
    return r


def processed(logits: torch.Tensor, rows: list[ScheduledRequest]) -> torch.Tensor:
    return apply_logits_processors(logits, SamplingMetadata.build(rows, {}, CPU))


def tokens(rng: random.Random, n: int, hi: int = VOCAB) -> list[int]:
    return [rng.randrange(hi) for _ in range(n)]


def hf(processor, input_ids: list[int], logits_row: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    ids = torch.tensor([input_ids], dtype=torch.int64) if input_ids else torch.zeros(1, 0, dtype=torch.int64)
    return processor(ids, logits_row.unsqueeze(0).clone())[0]


@pytest.mark.parametrize("seed", range(3))
def test_repetition_penalty_matches_transformers(seed: int) -> None:
    rng = random.Random(seed)
    penalties = [1.0, 1.2, 0.8, 2.0, 1.05, 1.0, 3.0, 0.5]
    rows, inputs = [], []
    for p in penalties:
        prompt, output = tokens(rng, rng.randint(1, 40), 64), tokens(rng, rng.randint(0, 20), 64)
        rows.append(row(SamplingParams(repetition_penalty=p), prompt, output))
        inputs.append(prompt + output)
    logits = random_logits(len(rows), seed=seed)
    ours = processed(logits, rows)
    for i, p in enumerate(penalties):
        expected = hf(transformers.RepetitionPenaltyLogitsProcessor(p), inputs[i], logits[i])
        torch.testing.assert_close(ours[i], expected, rtol=0, atol=0)
    assert not torch.equal(ours[1], logits[1])


@pytest.mark.parametrize("seed", range(3))
def test_frequency_and_presence_penalties_follow_openai(seed: int) -> None:
    """logit[t] -= frequency * count(t) + presence * (count(t) > 0), over output tokens only."""
    rng = random.Random(seed)
    settings = [(0.0, 0.0), (0.5, 0.0), (0.0, 1.0), (-0.7, 1.5), (2.0, -2.0), (1.0, 1.0)]
    rows, outputs = [], []
    for freq, pres in settings:
        output = tokens(rng, rng.randint(0, 30), 32)
        rows.append(row(SamplingParams(frequency_penalty=freq, presence_penalty=pres), tokens(rng, 10, 32), output))
        outputs.append(output)
    logits = random_logits(len(rows), seed=seed)
    ours = processed(logits, rows)
    expected = logits.clone()
    for i, (freq, pres) in enumerate(settings):
        for t in set(outputs[i]):
            expected[i, t] -= freq * outputs[i].count(t) + pres
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_rows_without_penalties_are_untouched_in_a_penalised_batch() -> None:
    rows = [row(SamplingParams(), [1, 2, 3], [4, 5]), row(SamplingParams(repetition_penalty=1.5), [1], [4])]
    logits = random_logits(2, seed=5)
    ours = processed(logits, rows)
    assert torch.equal(ours[0], logits[0]) and not torch.equal(ours[1], logits[1])


def test_logit_bias_matches_sequence_bias() -> None:
    bias = {0: 5.0, 7: -3.5, 100: 100.0, 511: -100.0}
    rows = [row(SamplingParams(logit_bias=bias)), row(SamplingParams()), row(SamplingParams(logit_bias={3: 1.0}))]
    logits = random_logits(3, seed=6)
    ours = processed(logits, rows)
    proc = transformers.SequenceBiasLogitsProcessor([[[t], b] for t, b in bias.items()])
    torch.testing.assert_close(ours[0], hf(proc, [9], logits[0]), rtol=0, atol=0)
    assert torch.equal(ours[1], logits[1])
    assert ours[2, 3] == logits[2, 3] + 1.0


def test_allowed_token_ids_match_prefix_constrained_processor() -> None:
    allowed = [3, 9, 200, 511]
    rows = [row(SamplingParams()), row(SamplingParams(allowed_token_ids=allowed))]
    logits = random_logits(2, seed=7)
    ours = processed(logits, rows)
    proc = transformers.PrefixConstrainedLogitsProcessor(lambda _batch, _ids: allowed, num_beams=1)
    torch.testing.assert_close(ours[1], hf(proc, [1], logits[1]), rtol=0, atol=0)
    assert torch.equal(ours[0], logits[0])


@pytest.mark.parametrize("seed", range(3))
def test_bad_words_match_transformers(seed: int) -> None:
    """transformers looks at the whole input; vLLM (and we) at the output, so the oracle gets the
    output as its input."""
    rng = random.Random(seed)
    words = [[5], [10, 11], [20, 21, 22], [30, 31]]
    outputs = [[], [10], [1, 20, 21], [20, 21, 5, 30], tokens(rng, 8, 40), [10, 20, 21]]
    rows = []
    for output in outputs:
        r = row(SamplingParams(bad_words=["w"]), [10, 20, 21], output)
        r.sampling_params._bad_words_token_ids = words
        rows.append(r)
    logits = random_logits(len(rows), seed=seed)
    ours = processed(logits, rows)
    proc = transformers.NoBadWordsLogitsProcessor(words, eos_token_id=None)
    for i, output in enumerate(outputs):
        torch.testing.assert_close(ours[i], hf(proc, output, logits[i]), rtol=0, atol=0)
    assert torch.isinf(ours[1, 11]) and torch.isinf(ours[5, 22]) and not torch.isinf(ours[0, 11])


def test_min_tokens_matches_min_new_tokens_processor() -> None:
    eos, prompt = 2, [7, 8, 9]
    for generated in range(4):
        output = list(range(40, 40 + generated))
        r = row(SamplingParams(min_tokens=3), prompt, output, eos=eos)
        logits = random_logits(1, seed=generated)
        proc = transformers.MinNewTokensLengthLogitsProcessor(len(prompt), 3, eos)
        torch.testing.assert_close(processed(logits, [r])[0], hf(proc, prompt + output, logits[0]), rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(3))
def test_greedy_pipeline_matches_a_transformers_processor_list(seed: int) -> None:
    rng = random.Random(seed)
    prompt, output = tokens(rng, 20, 64), tokens(rng, 10, 64)
    params = SamplingParams(temperature=0, repetition_penalty=1.3, logit_bias={5: 2.0, 6: -1.0},
                            min_tokens=12, bad_words=["x"])
    r = row(params, prompt, output, eos=2)
    params._bad_words_token_ids = [[7], [output[-1], 9]]
    logits = random_logits(1, seed=seed, scale=1.0)
    logits[0, prompt[0]] += 4.0  # a penalised token competes for the argmax
    hf_procs = transformers.LogitsProcessorList([
        transformers.RepetitionPenaltyLogitsProcessor(1.3),
        transformers.SequenceBiasLogitsProcessor([[[5], 2.0], [[6], -1.0]]),
        transformers.MinNewTokensLengthLogitsProcessor(len(prompt), 12, 2),
    ])
    expected = hf_procs(torch.tensor([prompt + output]), logits.clone())
    expected = transformers.NoBadWordsLogitsProcessor([[7], [output[-1], 9]])(torch.tensor([output]), expected)
    ours = processed(logits, [r])
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)
    md = SamplingMetadata.build([r], {}, CPU)
    assert ReferenceSampler()(logits, md, None).tolist() == expected.argmax(dim=-1).tolist()


def test_sampler_leaves_the_callers_logits_alone() -> None:
    logits = random_logits(2, seed=8)
    before = logits.clone()
    rows = [row(SamplingParams(min_tokens=2, repetition_penalty=2.0, logit_bias={1: 3.0}), [1, 2], [3], eos=4),
            row(SamplingParams(temperature=0.5, top_k=3, allowed_token_ids=[1, 2, 3]))]
    ReferenceSampler()(logits, SamplingMetadata.build(rows, {}, CPU), torch.Generator().manual_seed(0))
    assert torch.equal(logits, before)


def test_allowed_tokens_bound_what_is_sampled() -> None:
    allowed = [3, 9, 200]
    rows = [row(SamplingParams(temperature=1.5, allowed_token_ids=allowed)) for _ in range(300)]
    logits = random_logits(1, seed=9, scale=0.1).repeat(300, 1)
    got = ReferenceSampler()(logits, SamplingMetadata.build(rows, {}, CPU), torch.Generator().manual_seed(0))
    assert set(got.tolist()) == set(allowed)


def test_token_bitmask_matches_xgrammar() -> None:
    xgr = pytest.importorskip("xgrammar")
    from vllm_core.sample.structured import TokenBitmask, apply_token_bitmask

    g = torch.Generator().manual_seed(0)
    bits = torch.randint(-(2**31), 2**31 - 1, (3, (VOCAB + 31) // 32), dtype=torch.int32, generator=g)
    logits = random_logits(5, seed=10)
    rows = torch.tensor([0, 2, 3])
    ours = apply_token_bitmask(logits, TokenBitmask(rows, bits))
    expected = logits.clone()
    sub = expected[rows]
    xgr.apply_token_bitmask_inplace(sub, bits)
    expected[rows] = sub
    assert torch.equal(ours, expected)
    assert torch.equal(ours[1], logits[1]) and torch.isinf(ours[0]).any()
