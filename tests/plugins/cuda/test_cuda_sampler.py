"""The fused Gumbel-max sampler: greedy rows equal argmax, sampled rows follow softmax(logits/T)
(checked against the exact distribution), and the plugin routes only simple batches to it."""

from __future__ import annotations

import importlib.util

import pytest
import torch

if importlib.util.find_spec("triton") is None or importlib.util.find_spec("vllm_cuda") is None:
    pytest.skip("needs triton and vllm_cuda", allow_module_level=True)

from vllm_cuda.sampler import gumbel_argmax  # noqa: E402


def device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def test_greedy_rows_equal_argmax() -> None:
    torch.manual_seed(0)
    logits = torch.randn(6, 3000, device=device())
    out = gumbel_argmax(logits, torch.zeros(6, device=device()), seed=1)
    assert out.tolist() == logits.argmax(-1).tolist()


def test_samples_follow_the_tempered_distribution() -> None:
    torch.manual_seed(0)
    vocab, rows, temp = 6, 500, 0.7
    base = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0], device=device())
    logits = base.expand(rows, vocab).contiguous()
    counts = torch.zeros(vocab)
    for seed in range(4):  # 2,000 samples
        ids = gumbel_argmax(logits, torch.full((rows,), temp, device=device()), seed=seed).cpu()
        counts += torch.bincount(ids, minlength=vocab).float()
    n = counts.sum()
    expected = torch.softmax(base.cpu() / temp, -1) * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 20.5, (counts, expected)  # 5 degrees of freedom: p ~ 0.001
    # the test can fail: the same counts are far from the untempered distribution
    wrong = torch.softmax(base.cpu(), -1) * n
    assert float(((counts - wrong) ** 2 / wrong).sum()) > 20.5


def test_different_steps_draw_different_samples() -> None:
    logits = torch.zeros(16, 50, device=device())
    temp = torch.ones(16, device=device())
    a = gumbel_argmax(logits, temp, seed=1).tolist()
    b = gumbel_argmax(logits, temp, seed=2).tolist()
    assert a != b
    assert a == gumbel_argmax(logits, temp, seed=1).tolist()
