"""The conformance kit against the cuda platform, on a real NVIDIA GPU (skipped elsewhere)."""

from __future__ import annotations

import pytest
import torch

from vllm_core.platforms.interface import Platform
from vllm_core.testing.conformance import AttentionConformance, EndToEndConformance, OpsConformance

pytest.importorskip("vllm_cuda")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")


@pytest.fixture
def conformance_platform() -> Platform:
    from vllm_core.platforms import resolve_platform

    return resolve_platform("cuda")


class TestCUDAAttention(AttentionConformance):
    pass


class TestCUDAOps(OpsConformance):
    pass


class TestCUDAEndToEnd(EndToEndConformance):
    pass
