"""Draft verification (speculative decoding): greedy acceptance is exact argmax matching, and
rejection sampling leaves the output distribution the target's (chi-square on 20,000 requests),
with the same test failing when the draft probabilities are misreported (so it can fail)."""

from __future__ import annotations

import pytest
import torch

from tests.core.test_sampler import CPU, make_row
from vllm_core.sample.metadata import SamplingMetadata
from vllm_core.sample.rejection import DraftBatch, verify_drafts
from vllm_core.sample.sampler import ReferenceSampler
from vllm_core.sampling_params import SamplingParams

stats = pytest.importorskip("scipy.stats")

GREEDY = SamplingParams(temperature=0.0)


def one_hot_logits(argmaxes: list[int], vocab: int = 8) -> torch.Tensor:
    logits = torch.zeros(len(argmaxes), vocab)
    logits[torch.arange(len(argmaxes)), torch.tensor(argmaxes)] = 5.0
    return logits


def test_greedy_accepts_matching_drafts_then_takes_the_argmax() -> None:
    # request 0: 3 drafts all equal to the argmax -> drafts + bonus argmax
    # request 1: 2 drafts, the second wrong -> first draft + the argmax at the second position
    # request 2: no drafts -> its argmax
    # request 3: first draft wrong -> just the correction
    argmax = [1, 2, 3, 4] + [5, 6, 7] + [0] + [3, 2]
    logits = one_hot_logits(argmax)
    drafts = DraftBatch(torch.tensor([1, 2, 3, 5, 0, 6]), [3, 2, 0, 1])
    rows = [make_row(GREEDY, req_id=str(i)) for i, n in enumerate([4, 3, 1, 2]) for _ in range(n)]
    metadata = SamplingMetadata.build(rows, {}, CPU)
    out = ReferenceSampler().verify(logits, metadata, drafts, torch.Generator().manual_seed(0))
    assert out == [[1, 2, 3, 4], [5, 6], [0], [3]]


def test_greedy_verification_equals_plain_greedy_sampling_token_by_token() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 50, generator=g)
    target = logits.argmax(dim=-1)
    drafts = DraftBatch(target[:5].clone(), [5])  # a perfect proposer
    out = verify_drafts(logits.softmax(-1), drafts, torch.tensor([True]))
    assert out == [target.tolist()]


def draw_first_tokens(p: torch.Tensor, q: torch.Tensor | None, reported_q: torch.Tensor | None, n: int) -> torch.Tensor:
    """n one-draft requests: the draft comes from q (or is token 2 when q is None), its reported
    probabilities are reported_q; returns the first output token of each request."""
    g = torch.Generator().manual_seed(7)
    if q is None:
        draft = torch.full((n,), 2)
    else:
        draft = torch.multinomial(q.expand(n, -1), 1, generator=g).squeeze(1)
    probs = torch.stack([p, p]).repeat(n, 1)  # draft row, bonus row per request
    drafts = DraftBatch(draft, [1] * n, None if reported_q is None else reported_q.expand(n, -1).contiguous())
    out = verify_drafts(probs, drafts, torch.zeros(n, dtype=torch.bool), g)
    return torch.tensor([tokens[0] for tokens in out])


P = torch.tensor([0.05, 0.30, 0.10, 0.25, 0.30])
Q = torch.tensor([0.40, 0.05, 0.25, 0.10, 0.20])


def chi_square_p(tokens: torch.Tensor, probs: torch.Tensor) -> float:
    counts = torch.bincount(tokens, minlength=len(probs)).double()
    expected = probs.double() / probs.double().sum() * len(tokens)
    return float(stats.chisquare(counts.numpy(), expected.numpy()).pvalue)


@pytest.mark.parametrize("proposer", ["sampled", "deterministic"])
def test_rejection_sampling_keeps_the_target_distribution(proposer: str) -> None:
    q = Q if proposer == "sampled" else None
    tokens = draw_first_tokens(P, q, q, 20_000)
    assert chi_square_p(tokens, P) > 1e-3


def test_misreported_draft_probabilities_fail_the_same_test() -> None:
    # the draft is always token 2 but reported as drawn from Q (q(2) = 0.25): token 2 comes out
    # with probability min(1, 0.10 / 0.25) = 0.4 instead of 0.10
    tokens = draw_first_tokens(P, None, Q, 20_000)
    assert chi_square_p(tokens, P) < 1e-6


def test_accepted_count_follows_the_acceptance_probability() -> None:
    # deterministic draft token 2: accepted with probability p(2) = 0.10
    n = 20_000
    probs = torch.stack([P, P]).repeat(n, 1)
    out = verify_drafts(probs, DraftBatch(torch.full((n,), 2), [1] * n), torch.zeros(n, dtype=torch.bool),
                        torch.Generator().manual_seed(3))
    accepted = sum(len(tokens) == 2 for tokens in out)
    assert stats.binomtest(accepted, n, 0.10).pvalue > 1e-3


@pytest.mark.parametrize(
    "drafts,rows,match",
    [
        (DraftBatch(torch.tensor([1, 2]), [1]), 3, "token_ids must be"),
        (DraftBatch(torch.tensor([1]), [1]), 3, "logits rows"),
        (DraftBatch(torch.tensor([1]), [-1, 2]), 2, "num_drafts must be >= 0"),
        (DraftBatch(torch.tensor([9]), [1]), 2, r"draft token ids must be in \[0, 8\)"),
        (DraftBatch(torch.tensor([1]), [1], torch.ones(1, 5)), 2, "draft probs must be"),
    ],
)
def test_bad_drafts_are_clear_errors(drafts: DraftBatch, rows: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        verify_drafts(torch.full((rows, 8), 1 / 8), drafts, torch.zeros(len(drafts.num_drafts), dtype=torch.bool))


def test_greedy_verification_reads_the_drafts_from_the_host() -> None:
    """With ``host_token_ids`` neither validation nor greedy verification reads the draft tensor
    back (on a GPU that copy would wait for the forward pass before the verification is even
    launched): a meta tensor, which has no data to read, stands for it."""
    from vllm_core.sample.rejection import verify_greedy

    drafts = DraftBatch(torch.empty(3, dtype=torch.int64, device="meta"), [3, 0], host_token_ids=[1, 2, 3])
    drafts.validate(5, 16)
    assert verify_greedy(torch.tensor([1, 2, 9, 4, 5]), drafts) == [[1, 2, 9], [5]]
    with pytest.raises(ValueError, match="host_token_ids must hold 3 tokens"):
        DraftBatch(torch.empty(3, dtype=torch.int64, device="meta"), [3], host_token_ids=[1, 2]).validate(4, 16)
    with pytest.raises(ValueError, match=r"draft token ids must be in \[0, 16\)"):
        DraftBatch(torch.empty(1, dtype=torch.int64, device="meta"), [1], host_token_ids=[16]).validate(2, 16)
