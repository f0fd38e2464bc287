"""The cuda platform's registration and detection, testable without a GPU."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm_cuda")

from vllm_core.platforms import probe_platforms  # noqa: E402
from vllm_core.plugins import manager, registry  # noqa: E402


def test_plugin_registers_platform_and_backend() -> None:
    assert "cuda" in registry.platforms()
    assert "triton" in registry.attention_backends()
    info = next(p for p in manager.loaded_plugins() if p.name == "cuda")
    assert info.distribution == "vllm-cuda"
    assert {"register_platforms", "register_attention_backends"} <= set(info.hooks)


def test_probe_explains_why_cuda_is_unavailable_here() -> None:
    probe = next(p for p in probe_platforms() if p.name == "cuda")
    if torch.cuda.is_available():
        assert probe.available
    else:
        assert not probe.available
        assert probe.reason in ("this torch has no CUDA support (CPU build)", "no CUDA device is visible")


def test_triton_backend_needs_cuda_capabilities() -> None:
    from vllm_core.attention.selector import select_backend
    from vllm_core.errors import ConfigError

    with pytest.raises(ConfigError, match="triton: needs"):
        select_backend(frozenset({"cpu"}), 64, torch.float16, forced="triton")
    chosen = select_backend(frozenset({"cuda", "triton", "cuda_graphs"}), 128, torch.bfloat16)
    assert chosen.name == "triton"


def test_graph_buckets() -> None:
    from vllm_cuda.graph_runner import batch_buckets

    assert batch_buckets(1) == [1]
    assert batch_buckets(40) == [1, 2, 4, 8, 16, 32, 40]
    assert batch_buckets(256)[-1] == 256 and 48 in batch_buckets(256)


def test_split_kv_partitions_fill_the_gpu_at_small_batch() -> None:
    from vllm_cuda.launch_nvidia import DEFAULT_LAUNCH_CONFIGS
    from vllm_cuda.ops.paged_attention import split_partition_size

    PARTITION_SIZE = DEFAULT_LAUNCH_CONFIGS.attention.partition_size

    # batch 1 x 8 KV heads, 1024 tokens: 32 partitions of 32 -> tile-rounded to 64 (16 partitions)
    assert split_partition_size(1024, 8, 64) == 64
    # many programs already: one partition per tile cap
    assert split_partition_size(100_000, 128, 64) == PARTITION_SIZE
    assert split_partition_size(300, 64, 64) % 64 == 0
