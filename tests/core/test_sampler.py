"""Tests for vllm_core.sample.sampler and vllm_core.sample.metadata."""

from __future__ import annotations

import pytest
import torch

from vllm_core.core.sched_output import ScheduledRequest
from vllm_core.sample.metadata import SamplingMetadata
from vllm_core.sample.sampler import ReferenceSampler, apply_min_p, apply_top_k_top_p
from vllm_core.sampling_params import SamplingParams

transformers = pytest.importorskip("transformers")

VOCAB = 512
CPU = torch.device("cpu")


def make_row(
    params: SamplingParams | None = None,
    req_id: str = "r",
    num_output_tokens: int = 0,
    eos_token_id: int | None = None,
) -> ScheduledRequest:
    return ScheduledRequest(
        req_id=req_id,
        token_ids=[1],
        start_pos=0,
        block_ids=[0],
        sampling_params=params or SamplingParams(),
        sample=True,
        num_output_tokens=num_output_tokens,
        eos_token_id=eos_token_id,
    )


def random_logits(rows: int, seed: int = 0, scale: float = 3.0, vocab: int = VOCAB) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, vocab, generator=g) * scale


def sample(
    logits: torch.Tensor,
    rows: list[ScheduledRequest],
    seeds: dict[int, int] | None = None,
    global_seed: int = 0,
) -> torch.Tensor:
    generators = {row: torch.Generator().manual_seed(s) for row, s in (seeds or {}).items()}
    metadata = SamplingMetadata.build(rows, generators, CPU)
    return ReferenceSampler()(logits.clone(), metadata, torch.Generator().manual_seed(global_seed))


# -------------------------------------------------------------------------- metadata
def test_metadata_build() -> None:
    rows = [
        make_row(SamplingParams(temperature=0)),
        make_row(SamplingParams(temperature=0.5, top_k=5, top_p=0.9, min_p=0.1)),
        make_row(SamplingParams()),
    ]
    m = SamplingMetadata.build(rows, {}, CPU)
    assert m.temperature.tolist() == [0.0, 0.5, 1.0]
    assert m.temperature.dtype == torch.float32
    assert m.top_k is not None and m.top_k.tolist() == [0, 5, 0] and m.top_k.dtype == torch.int64
    assert m.top_p is not None and m.top_p.tolist() == pytest.approx([1.0, 0.9, 1.0])
    assert m.min_p is not None and m.min_p.tolist() == pytest.approx([0.0, 0.1, 0.0])
    assert not m.all_greedy and not m.all_random
    assert m.banned_tokens == []


def test_metadata_leaves_unused_filters_out() -> None:
    m = SamplingMetadata.build([make_row(), make_row(SamplingParams(top_k=-1))], {}, CPU)
    assert m.top_k is None and m.top_p is None and m.min_p is None
    assert m.all_random and not m.all_greedy
    g = SamplingMetadata.build([make_row(SamplingParams(temperature=0))], {}, CPU)
    assert g.all_greedy and not g.all_random


def test_metadata_bans_eos_and_stop_ids_before_min_tokens() -> None:
    rows = [
        make_row(SamplingParams(min_tokens=3, stop_token_ids=[7]), num_output_tokens=2, eos_token_id=2),
        make_row(SamplingParams(min_tokens=3, stop_token_ids=[7]), num_output_tokens=3, eos_token_id=2),
        make_row(SamplingParams(min_tokens=3, ignore_eos=True), num_output_tokens=0, eos_token_id=2),
        make_row(SamplingParams(min_tokens=3), num_output_tokens=0, eos_token_id=None),
        make_row(SamplingParams(min_tokens=1), num_output_tokens=0, eos_token_id=5),
    ]
    m = SamplingMetadata.build(rows, {}, CPU)
    assert m.banned_tokens == [(0, [7, 2]), (4, [5])]


# ---------------------------------------------------------------------------- greedy
def test_greedy_is_argmax() -> None:
    logits = random_logits(8)
    rows = [make_row(SamplingParams(temperature=0)) for _ in range(8)]
    assert torch.equal(sample(logits, rows), logits.argmax(dim=-1))


def test_greedy_rows_in_a_mixed_batch_are_argmax() -> None:
    logits = random_logits(6, seed=1)
    rows = [make_row(SamplingParams(temperature=0 if i % 2 else 1.0)) for i in range(6)]
    out = sample(logits, rows)
    greedy = logits.argmax(dim=-1)
    assert torch.equal(out[1::2], greedy[1::2])


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 50.0])
@pytest.mark.parametrize(
    "filters",
    [{"top_k": 1}, {"top_p": 1e-6}, {"min_p": 1.0}],
    ids=["top_k=1", "top_p=1e-6", "min_p=1"],
)
def test_filters_that_keep_one_token_equal_greedy(temperature: float, filters: dict[str, float]) -> None:
    logits = random_logits(16, seed=2)
    rows = [make_row(SamplingParams(temperature=temperature, **filters)) for _ in range(16)]  # type: ignore[arg-type]
    for global_seed in range(3):
        assert torch.equal(sample(logits, rows, global_seed=global_seed), logits.argmax(dim=-1))


def test_random_sampling_follows_the_distribution() -> None:
    """Exponential-race sampling draws from softmax(logits / T)."""
    logits = torch.tensor([[0.0, 1.0, 2.0, -1.0]]).repeat(4000, 1)
    rows = [make_row(SamplingParams(temperature=1.0)) for _ in range(4000)]
    counts = torch.bincount(sample(logits, rows), minlength=4).float() / 4000
    expected = torch.tensor([0.0, 1.0, 2.0, -1.0]).softmax(dim=0)
    assert torch.allclose(counts, expected, atol=0.03)


def test_top_k_samples_only_from_the_top_k() -> None:
    logits = random_logits(1, seed=3, scale=0.5).repeat(500, 1)  # flat: top-k is the only limit
    rows = [make_row(SamplingParams(top_k=5)) for _ in range(500)]
    allowed = set(logits[0].topk(5).indices.tolist())
    got = set(sample(logits, rows).tolist())
    assert got <= allowed and len(got) == 5


# ------------------------------------------------------------------------- seeded rows
def test_seeded_row_is_independent_of_the_batch() -> None:
    target_logits = random_logits(1, seed=4, scale=1.0)
    params = SamplingParams(temperature=0.9, seed=1234)
    others = [
        (SamplingParams(temperature=0), random_logits(1, seed=5)),
        (SamplingParams(temperature=1.0, top_p=0.5), random_logits(1, seed=6)),
        (SamplingParams(temperature=0.7, top_k=3, min_p=0.2), random_logits(1, seed=7)),
        (SamplingParams(temperature=1.2, seed=99), random_logits(1, seed=8)),
    ]

    def draw(position: int, other_rows: list[tuple[SamplingParams, torch.Tensor]], global_seed: int) -> list[int]:
        layout = list(other_rows)
        layout.insert(position, (params, target_logits))
        rows = [make_row(p, req_id=str(i)) for i, (p, _) in enumerate(layout)]
        logits = torch.cat([lg for _, lg in layout])
        gens = {i: torch.Generator().manual_seed(p.seed) for i, (p, _) in enumerate(layout) if p.seed is not None}
        metadata = SamplingMetadata.build(rows, gens, CPU)
        sampler, global_gen = ReferenceSampler(), torch.Generator().manual_seed(global_seed)
        # Several steps: the request's generator advances the same way in every batch.
        return [int(sampler(logits.clone(), metadata, global_gen)[position]) for _ in range(20)]

    alone = draw(0, [], global_seed=0)
    assert len(set(alone)) > 1  # really random, not greedy
    assert draw(0, others, global_seed=1) == alone
    assert draw(2, others, global_seed=2) == alone
    assert draw(4, others[::-1], global_seed=3) == alone
    assert draw(1, others[:1], global_seed=4) == alone


def test_same_seed_same_tokens_different_seed_different_tokens() -> None:
    logits = random_logits(1, seed=9, scale=0.5)
    a = [int(sample(logits, [make_row(SamplingParams(seed=7))], seeds={0: 7}, global_seed=s)) for s in range(10)]
    b = [int(sample(logits, [make_row(SamplingParams(seed=7))], seeds={0: 7}, global_seed=0)) for _ in range(10)]
    assert a == b and len(set(a)) == 1
    c = {int(sample(logits, [make_row(SamplingParams(seed=s))], seeds={0: s})) for s in range(20)}
    assert len(c) > 1


# ------------------------------------------------------------------------- min_tokens
def test_min_tokens_bans_eos() -> None:
    eos = 11
    logits = random_logits(3, seed=10)
    logits[:, eos] = 100.0
    logits[:, 12] = 50.0
    rows = [
        make_row(SamplingParams(temperature=0, min_tokens=2), num_output_tokens=1, eos_token_id=eos),
        make_row(SamplingParams(temperature=1.0, min_tokens=2), num_output_tokens=0, eos_token_id=eos),
        make_row(SamplingParams(temperature=0, min_tokens=2), num_output_tokens=2, eos_token_id=eos),
    ]
    out = sample(logits, rows).tolist()
    assert out == [12, 12, eos]


def test_min_tokens_bans_stop_token_ids() -> None:
    logits = random_logits(1, seed=11)
    logits[0, 3] = 100.0
    logits[0, 4] = 90.0
    logits[0, 5] = 80.0
    row = make_row(SamplingParams(temperature=0, min_tokens=1, stop_token_ids=[3, 4]), eos_token_id=None)
    assert sample(logits, [row]).tolist() == [5]


# ------------------------------------------------------------- masks vs transformers
def surviving(logits: torch.Tensor) -> list[set[int]]:
    return [set(torch.isfinite(row).nonzero().flatten().tolist()) for row in logits]


def hf_filter(logits: torch.Tensor, warper_of_row) -> torch.Tensor:  # type: ignore[no-untyped-def]
    out = []
    for i in range(logits.shape[0]):
        warper = warper_of_row(i)
        row = logits[i : i + 1]
        out.append(row if warper is None else warper(None, row.clone()))
    return torch.cat(out)


@pytest.mark.parametrize("seed", range(3))
def test_top_k_matches_transformers(seed: int) -> None:
    logits = random_logits(16, seed=seed)
    ks = torch.tensor([1, 2, 5, 10, 50, 100, 511, 512, 1000, 0, 3, 7, 20, 64, 256, 0])
    ours = apply_top_k_top_p(logits.clone(), ks, None)
    hf = hf_filter(logits, lambda i: transformers.TopKLogitsWarper(int(ks[i])) if ks[i] > 0 else None)
    assert surviving(ours) == surviving(hf)
    finite = torch.isfinite(ours)
    assert torch.equal(ours[finite], logits[finite])


@pytest.mark.parametrize("seed", range(3))
def test_top_p_matches_transformers(seed: int) -> None:
    logits = random_logits(16, seed=seed)
    ps = torch.tensor([0.01, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 0.25, 0.75, 1.0])
    ours = apply_top_k_top_p(logits.clone(), None, ps)
    hf = hf_filter(logits, lambda i: transformers.TopPLogitsWarper(float(ps[i])))
    assert surviving(ours) == surviving(hf)


@pytest.mark.parametrize("seed", range(3))
def test_min_p_matches_transformers(seed: int) -> None:
    logits = random_logits(16, seed=seed)
    mps = torch.tensor([0.0, 0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.99, 1.0])
    ours = apply_min_p(logits.clone(), mps)
    hf = hf_filter(logits, lambda i: transformers.MinPLogitsWarper(float(mps[i])) if mps[i] > 0 else None)
    assert surviving(ours) == surviving(hf)


@pytest.mark.parametrize("seed", range(3))
def test_combined_pipeline_matches_transformers(seed: int) -> None:
    """temperature -> top-k -> top-p -> min-p, as transformers' generate orders its warpers."""
    logits = random_logits(8, seed=seed)
    temps = [0.5, 0.7, 1.0, 1.3, 2.0, 0.9, 1.1, 3.0]
    ks = [0, 40, 10, 100, 0, 5, 200, 50]
    ps = [0.9, 1.0, 0.8, 0.5, 0.95, 0.99, 0.7, 0.6]
    mps = [0.05, 0.1, 0.0, 0.02, 0.2, 0.0, 0.01, 0.3]

    scaled = logits / torch.tensor(temps).unsqueeze(1)
    ours = apply_top_k_top_p(scaled.clone(), torch.tensor(ks), torch.tensor(ps))
    ours = apply_min_p(ours, torch.tensor(mps))

    hf_rows = []
    for i in range(8):
        row = scaled[i : i + 1].clone()
        if ks[i] > 0:
            row = transformers.TopKLogitsWarper(ks[i])(None, row)
        row = transformers.TopPLogitsWarper(ps[i])(None, row)
        if mps[i] > 0:
            row = transformers.MinPLogitsWarper(mps[i])(None, row)
        hf_rows.append(row)
    assert surviving(ours) == surviving(torch.cat(hf_rows))


def test_top_p_of_one_keeps_every_token_in_a_batch_that_uses_top_p() -> None:
    """A row with top_p=1 (off) must not lose tail tokens to float32 rounding of the cumulative
    sum just because another row of the batch turned top_p on (the batch would then change
    what a seeded request can sample)."""
    logits = random_logits(4, seed=12, scale=5.0, vocab=49152)
    ps = torch.tensor([1.0, 0.5, 1.0, 1.0])
    out = apply_top_k_top_p(logits.clone(), None, ps)
    for row in (0, 2, 3):
        assert torch.isfinite(out[row]).all(), f"row {row} lost {int((~torch.isfinite(out[row])).sum())} tokens"
    assert not torch.isfinite(out[1]).all()


def test_sampled_tokens_survive_the_filters() -> None:
    logits = random_logits(1, seed=13, scale=1.0).repeat(300, 1)
    params = SamplingParams(temperature=0.8, top_k=30, top_p=0.6, min_p=0.05)
    rows = [make_row(params) for _ in range(300)]
    scaled = logits[:1] / 0.8
    expected = transformers.TopKLogitsWarper(30)(None, scaled.clone())
    expected = transformers.TopPLogitsWarper(0.6)(None, expected)
    expected = transformers.MinPLogitsWarper(0.05)(None, expected)
    allowed = surviving(expected)[0]
    got = set(sample(logits, rows).tolist())
    assert got <= allowed and len(got) > 1
