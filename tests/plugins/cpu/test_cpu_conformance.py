"""The conformance kit against the CPU platform (no --vllm-platform needed)."""

from __future__ import annotations

import pytest

from tests.conftest import import_or_require
from vllm_core.platforms.interface import Platform
from vllm_core.testing.conformance import AttentionConformance, EndToEndConformance, OpsConformance

import_or_require("vllm_cpu", "cpu")


@pytest.fixture
def conformance_platform() -> Platform:
    from vllm_core.platforms import resolve_platform

    return resolve_platform("cpu")


class TestCPUAttention(AttentionConformance):
    pass


class TestCPUOps(OpsConformance):
    pass


class TestCPUEndToEnd(EndToEndConformance):
    pass
