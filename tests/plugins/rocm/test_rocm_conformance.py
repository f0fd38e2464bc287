"""The conformance kit against the rocm platform, on a real AMD GPU with ROCm torch (skipped
elsewhere: without one, tests/plugins/rocm's other modules are what runs)."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import import_or_require
from vllm_core.platforms.interface import Platform
from vllm_core.testing.conformance import AttentionConformance, EndToEndConformance, OpsConformance

import_or_require("vllm_rocm", "rocm")
ON_AMD_GPU = bool(getattr(torch.version, "hip", None)) and torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not ON_AMD_GPU, reason="needs an AMD GPU and ROCm torch")


@pytest.fixture
def conformance_platform() -> Platform:
    from vllm_core.platforms import resolve_platform

    return resolve_platform("rocm")


class TestROCmAttention(AttentionConformance):
    pass


class TestROCmOps(OpsConformance):
    pass


class TestROCmEndToEnd(EndToEndConformance):
    pass
