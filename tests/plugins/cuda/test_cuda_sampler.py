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


def test_chunked_vocabulary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over several vocabulary chunks (the last one partial): greedy picks the max wherever it
    lies, the lowest index among ties across chunks, and sampled rows do not depend on the
    chunking (the noise is drawn per (row, token))."""
    from dataclasses import replace

    from vllm_cuda.launch_nvidia import DEFAULT_LAUNCH_CONFIGS

    vocab = 5000
    logits = torch.randn(4, vocab, generator=torch.Generator().manual_seed(1)).to(device())
    logits[0, 4999] = 50.0  # in the last, partial chunk
    logits[1, [700, 3000, 4100]] = 50.0  # ties in three chunks
    greedy = gumbel_argmax(logits, torch.zeros(4, device=device()), seed=3).tolist()
    temp = torch.full((4,), 0.8, device=device())
    whole = gumbel_argmax(logits, temp, seed=3).tolist()
    small = replace(DEFAULT_LAUNCH_CONFIGS, sampler=replace(DEFAULT_LAUNCH_CONFIGS.sampler, chunk=1024))
    assert gumbel_argmax(logits, torch.zeros(4, device=device()), seed=3, configs=small).tolist() == greedy
    assert greedy == [4999, 700, *logits[2:].argmax(-1).tolist()]
    assert gumbel_argmax(logits, temp, seed=3, configs=small).tolist() == whole


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Triton interpreter cannot widen bfloat16 loads; needs a GPU")
def test_16bit_logits_sample_as_their_float32_values() -> None:
    """Logits read as bfloat16 by the kernel give the tokens of the same values in float32."""
    logits = torch.randn(8, 3000, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16).to(device())
    temp = torch.tensor([0.0, 0.5, 1.0, 0.7] * 2, device=device())
    assert gumbel_argmax(logits, temp, seed=5).tolist() == gumbel_argmax(logits.float(), temp, seed=5).tolist()


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
