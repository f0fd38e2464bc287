"""The sampler draws from the distribution its settings define: chi-square tests of thousands of
seeded draws against the distribution ``transformers``' warpers give, and the same test failing
when the setting is deliberately wrong (so it can fail)."""

from __future__ import annotations

import pytest
import torch

from tests.core.test_sampler import CPU, make_row
from vllm_core.sample.metadata import SamplingMetadata
from vllm_core.sample.sampler import ReferenceSampler
from vllm_core.sampling_params import SamplingParams

transformers = pytest.importorskip("transformers")
stats = pytest.importorskip("scipy.stats")

N = 4000
LOGITS = torch.tensor([2.0, 1.5, 1.2, 1.0, 0.7, 0.5, 0.2, 0.0, -0.3, -0.8, -1.5, -3.0])


def expected_probs(temperature: float, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0) -> torch.Tensor:
    scores = (LOGITS / temperature).unsqueeze(0)
    if top_k:
        scores = transformers.TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = transformers.TopPLogitsWarper(top_p)(None, scores)
    if min_p:
        scores = transformers.MinPLogitsWarper(min_p)(None, scores)
    return scores.softmax(dim=-1)[0].double()


def seeded_draws(params: SamplingParams, n: int = N) -> torch.Tensor:
    """n rows in one batch, each a request with its own seed (as ``n`` samples of one request get)."""
    rows = [make_row(params.clone(seed=s), req_id=str(s)) for s in range(n)]
    gens = {s: torch.Generator().manual_seed(s) for s in range(n)}
    metadata = SamplingMetadata.build(rows, gens, CPU)
    return ReferenceSampler()(LOGITS.repeat(n, 1), metadata, torch.Generator().manual_seed(0))


def chi_square_p(draws: torch.Tensor, probs: torch.Tensor) -> float:
    """p-value of the draws under ``probs``; a draw outside the support fails outright."""
    counts = torch.bincount(draws, minlength=len(probs)).double()
    support = probs > 0
    if counts[~support].sum() > 0:
        return 0.0
    observed, expected = counts[support], probs[support] / probs[support].sum() * len(draws)
    return float(stats.chisquare(observed.numpy(), expected.numpy()).pvalue)


SETTINGS = [
    {"temperature": 1.0},
    {"temperature": 0.6},
    {"temperature": 1.7, "top_k": 5},
    {"temperature": 1.0, "top_p": 0.7},
    {"temperature": 0.8, "min_p": 0.2},
    {"temperature": 1.2, "top_k": 8, "top_p": 0.9, "min_p": 0.05},
]


@pytest.mark.parametrize("setting", SETTINGS, ids=[str(s) for s in SETTINGS])
def test_seeded_draws_follow_the_expected_distribution(setting: dict[str, float]) -> None:
    p = chi_square_p(seeded_draws(SamplingParams(**setting)), expected_probs(**setting))  # type: ignore[arg-type]
    assert p > 1e-3, f"chi-square p={p:.2e}"


@pytest.mark.parametrize(
    ("used", "claimed"),
    [
        ({"temperature": 0.7}, {"temperature": 1.0}),
        ({"temperature": 1.0, "top_k": 5}, {"temperature": 1.0, "top_k": 6}),
        ({"temperature": 1.0, "top_p": 0.7}, {"temperature": 1.0, "top_p": 0.9}),
        ({"temperature": 1.0, "min_p": 0.3}, {"temperature": 1.0, "min_p": 0.1}),
    ],
)
def test_a_wrong_setting_fails_the_test(used: dict[str, float], claimed: dict[str, float]) -> None:
    p = chi_square_p(seeded_draws(SamplingParams(**used)), expected_probs(**claimed))  # type: ignore[arg-type]
    assert p < 1e-6, f"chi-square p={p:.2e} did not reject a wrong distribution"


def test_seeded_row_with_processors_is_independent_of_the_batch() -> None:
    """A seeded row with penalties, bias and bans draws the same tokens whatever the batch holds
    and wherever the row sits in it."""
    target = SamplingParams(temperature=0.9, seed=77, repetition_penalty=1.3, frequency_penalty=0.5,
                            logit_bias={3: 2.0}, min_tokens=4)
    others = [
        SamplingParams(temperature=0),
        SamplingParams(temperature=1.0, top_p=0.5, presence_penalty=1.0),
        SamplingParams(temperature=0.7, top_k=3, allowed_token_ids=[1, 2, 3, 4]),
        SamplingParams(temperature=1.2, seed=5, logit_bias={0: -50.0}),
    ]
    logits = torch.randn(1, 64, generator=torch.Generator().manual_seed(3))

    def draw(position: int, batch: list[SamplingParams], global_seed: int) -> list[int]:
        layout = list(batch)
        layout.insert(position, target)
        gens = {i: torch.Generator().manual_seed(p.seed) for i, p in enumerate(layout) if p.seed is not None}
        sampler, global_gen = ReferenceSampler(), torch.Generator().manual_seed(global_seed)
        outputs: list[list[int]] = [[] for _ in layout]
        got = []
        for _ in range(12):
            rows = []
            for i, p in enumerate(layout):
                r = make_row(p, req_id=str(i), num_output_tokens=len(outputs[i]), eos_token_id=5)
                r.prompt_token_ids, r.output_token_ids = [1, 2, 3], outputs[i]
                rows.append(r)
            tokens = sampler(logits.repeat(len(layout), 1), SamplingMetadata.build(rows, gens, CPU), global_gen)
            for i, t in enumerate(tokens.tolist()):
                outputs[i].append(t)
            got.append(int(tokens[position]))
        return got

    alone = draw(0, [], 0)
    assert len(set(alone)) > 1 and 5 not in alone[:4]
    assert draw(2, others, 1) == alone
    assert draw(4, others[::-1], 2) == alone
    assert draw(1, others[2:3], 3) == alone
