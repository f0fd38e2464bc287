"""The cpu platform's memory: 128-token KV blocks by default, the KV cache and packed weights
allocated through ``vllm_cpu.memory`` (huge pages when ``VLLM_CPU_HUGE_PAGES=1``)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import import_or_require, require_or_skip

import_or_require("vllm_cpu", "cpu")

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
        require_or_skip("madv-hugepage", "no MADV_HUGEPAGE here")
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


def _rss() -> int:
    import resource

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def test_reservation_hands_out_faulted_zeroed_tensors_and_releases_the_rest() -> None:
    """Tensors come from the front of the reservation, aligned, zeroed, resident before their
    first write and independent of each other; ``release`` stops the faulting and gives back the
    pages nobody took, while the tensors handed out stay valid."""
    nbytes = 3 * memory.POPULATE_PIECE + 4096
    before = _rss()
    r = memory.Reservation(nbytes)
    a = r.take((1000, 3), torch.float32)
    b = r.take((memory.POPULATE_PIECE // 2,), torch.bfloat16)  # 64-byte aligned after a's 12000 bytes
    assert a is not None and b is not None
    assert a.shape == (1000, 3) and b.dtype is torch.bfloat16
    assert b.data_ptr() - a.data_ptr() == 12032 and b.data_ptr() % memory.ALIGN == 0
    assert r.ready_bytes >= 12032 + memory.POPULATE_PIECE  # waited for its own pages
    assert int(torch.count_nonzero(a)) == 0 and int(torch.count_nonzero(b)) == 0
    a.fill_(1.0)
    assert int(torch.count_nonzero(b)) == 0
    assert r.take((nbytes,), torch.uint8) is None  # more than is left: the caller allocates itself
    r.release()
    assert r.take((16,), torch.uint8) is None  # released: nothing more is handed out
    assert _rss() - before < nbytes // 2  # the untaken pages went back
    assert float(a.sum()) == 3000.0 and int(torch.count_nonzero(b)) == 0
    b[-1] = 2.0
    del a, r
    assert float(b[-1]) == 2.0  # a tensor keeps the mapping alive


def test_reservation_faults_everything_in_when_nothing_takes() -> None:
    nbytes = 2 * memory.POPULATE_PIECE + 8192
    before = _rss()
    r = memory.Reservation(nbytes)
    t = r.take((nbytes,), torch.uint8)
    assert t is not None and r.ready_bytes == nbytes
    assert _rss() - before >= 0.95 * nbytes
    r.release()
    assert int(torch.count_nonzero(t)) == 0


def test_engine_prepares_the_kv_cache_while_the_model_loads(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """With a byte budget (or the default sizing) the cpu platform sets it aside before the model
    loads, the cache is carved from it, and its size is the budget; a block-count override
    prepares nothing. Outputs equal either way."""
    path, _ = tiny_models["llama"]
    greedy = SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True, detokenize=False)
    prompt = [{"prompt_token_ids": list(range(5, 40))}]
    budget = 48 << 20
    llm = LLM(path, device="cpu", max_model_len=256, kv_cache_memory_bytes=budget, use_tqdm_on_load=False,
              skip_tokenizer_init=True)
    core = llm.llm_engine.core
    platform = llm.llm_engine.platform
    assert platform._kv_reservation is None  # released once the cache was allocated
    spec = core.kv_spec
    assert spec.num_blocks == budget // spec.bytes_per_block
    caches = core.runner.kv_caches
    # one mapping, the layers back to back from its start
    starts = [c.data_ptr() for c in caches]
    assert starts == sorted(starts) and starts[1] - starts[0] == caches[0].numel() * caches[0].element_size()
    fixed = LLM(path, device="cpu", max_model_len=256, num_gpu_blocks_override=spec.num_blocks,
                use_tqdm_on_load=False, skip_tokenizer_init=True)
    assert fixed.llm_engine.core.kv_spec.num_blocks == spec.num_blocks
    assert llm.generate(prompt, greedy, use_tqdm=False)[0].outputs[0].token_ids == \
        fixed.generate(prompt, greedy, use_tqdm=False)[0].outputs[0].token_ids


def test_a_failed_start_releases_the_prepared_memory(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from vllm_core.errors import ModelLoadError

    released = []
    release = memory.Reservation.release

    def recording_release(self: memory.Reservation) -> None:
        released.append(self.nbytes)
        release(self)

    monkeypatch.setattr(memory.Reservation, "release", recording_release)
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(ModelLoadError):
        LLM(str(bad), device="cpu", kv_cache_memory_bytes=64 << 20, use_tqdm_on_load=False)
    assert released == [64 << 20]
