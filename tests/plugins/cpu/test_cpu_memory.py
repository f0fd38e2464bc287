"""The cpu platform's memory: 128-token KV blocks by default, the KV cache and packed weights
allocated through ``vllm_cpu.memory`` (huge pages when ``VLLM_CPU_HUGE_PAGES=1``)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm_cpu")

from vllm_core import LLM, SamplingParams  # noqa: E402
from vllm_cpu import memory  # noqa: E402
from vllm_cpu.kernels import pack_weight  # noqa: E402
from vllm_cpu.platform import CPUPlatform  # noqa: E402

HUGE = (memory.MIN_BYTES // 4 + 4096,)


def anon_huge_kib() -> int:
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    return 0


@pytest.mark.parametrize("huge", ["0", "1"])
@pytest.mark.parametrize("prefault", [False, True])
def test_zeros_are_zero_writable_and_shaped(monkeypatch: pytest.MonkeyPatch, huge: str, prefault: bool) -> None:
    monkeypatch.setenv(memory.ENV_HUGE_PAGES, huge)
    x = memory.zeros((2, HUGE[0] // 2), torch.float32, prefault=prefault)
    assert x.shape == (2, HUGE[0] // 2) and x.dtype is torch.float32 and x.is_contiguous()
    assert int(torch.count_nonzero(x)) == 0
    x[1, -1] = 3.0
    view = x[1]
    del x  # a view keeps the memory alive
    assert float(view[-1]) == 3.0 and float(view.sum()) == 3.0


def test_huge_pages_back_large_tensors_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    if not memory.has_madv_hugepage():
        pytest.skip("no MADV_HUGEPAGE here")
    monkeypatch.setenv(memory.ENV_HUGE_PAGES, "1")
    before = anon_huge_kib()
    x = memory.zeros((64 << 20,), torch.uint8, prefault=True)
    grown = anon_huge_kib() - before
    # THP may be off system-wide ("never"): then the tensor is still correct, just not huge
    thp = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    if "[never]" not in thp:
        assert grown >= 32 << 10, f"expected >= 32 MiB of huge pages, got {grown} KiB"
    assert int(x[::4096].sum()) == 0


def test_small_or_disabled_stays_on_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(memory.ENV_HUGE_PAGES, "0")
    assert not memory.huge_pages_enabled()
    monkeypatch.setenv(memory.ENV_HUGE_PAGES, "1")
    small = memory.zeros((16,), torch.bfloat16)
    assert small.shape == (16,) and int(torch.count_nonzero(small)) == 0


@pytest.mark.parametrize("huge", ["0", "1"])
def test_pack_weight_is_the_same_on_either_memory(monkeypatch: pytest.MonkeyPatch, huge: str) -> None:
    monkeypatch.setenv(memory.ENV_HUGE_PAGES, huge)
    w = torch.randn(1000, 1152)
    packed = pack_weight(w)
    assert packed.shape == (32, 1152, 32)
    torch.testing.assert_close(packed[3, :, 5], w[3 * 32 + 5], rtol=0, atol=0)
    assert int(torch.count_nonzero(packed[-1, :, 1000 - 31 * 32:])) == 0  # padding panel


def test_kv_cache_allocation_and_platform_defaults(tiny_models) -> None:  # type: ignore[no-untyped-def]
    platform = CPUPlatform()
    cache = platform.allocate_kv_cache((2, 3, 128, 2, 16), torch.bfloat16)
    assert cache.shape == (2, 3, 128, 2, 16) and cache.dtype is torch.bfloat16
    assert int(torch.count_nonzero(cache)) == 0
    path, _ = tiny_models["llama"]
    greedy = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True, detokenize=False)
    prompt = [{"prompt_token_ids": list(range(5, 40))}]
    llm = LLM(path, device="cpu", max_model_len=256, num_gpu_blocks_override=8, use_tqdm_on_load=False, skip_tokenizer_init=True)
    assert llm.llm_engine.core.kv_spec.block_size == CPUPlatform.default_block_size == 128
    # the step budget too is the platform's unless given
    assert llm.llm_engine.core.scheduler.max_num_batched_tokens == CPUPlatform.default_max_num_batched_tokens == 2048
    small = LLM(path, device="cpu", max_model_len=256, num_gpu_blocks_override=80, block_size=8,
                use_tqdm_on_load=False, skip_tokenizer_init=True)
    assert small.llm_engine.core.kv_spec.block_size == 8
    budget = LLM(path, device="cpu", max_model_len=256, num_gpu_blocks_override=8, max_num_batched_tokens=96,
                 use_tqdm_on_load=False, skip_tokenizer_init=True)
    assert budget.llm_engine.core.scheduler.max_num_batched_tokens == 96
    assert llm.generate(prompt, greedy, use_tqdm=False)[0].outputs[0].token_ids == \
        small.generate(prompt, greedy, use_tqdm=False)[0].outputs[0].token_ids


def test_prefault_maps_every_page_in_on_all_cores() -> None:
    """A prefaulted tensor is resident before its first write (pieces of POPULATE_PIECE bytes
    faulted in on one thread per core), and reads as zeros."""
    import resource

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    shape = (5 * memory.POPULATE_PIECE // 4 + 1024,)  # five pieces and a partial sixth
    nbytes = shape[0] * 4
    before = rss()
    t = memory.zeros(shape, torch.float32, prefault=True)
    assert rss() - before >= 0.95 * nbytes
    assert int(torch.count_nonzero(t)) == 0
    lazy_before = rss()
    lazy = memory.zeros(shape, torch.float32)
    assert rss() - lazy_before < 0.1 * nbytes  # without prefault: mapped, not yet resident
    lazy[-1] = 1.0
    assert float(lazy.sum()) == 1.0
