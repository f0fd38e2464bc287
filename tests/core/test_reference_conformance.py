"""Sanity check of the conformance kit: the reference platform passes it against itself."""

from __future__ import annotations

import pytest

from vllm_core.platforms.interface import Platform
from vllm_core.platforms.reference import ReferencePlatform
from vllm_core.testing.conformance import AttentionConformance, EndToEndConformance, OpsConformance


@pytest.fixture
def conformance_platform() -> Platform:
    return ReferencePlatform()


class TestReferenceAttention(AttentionConformance):
    pass


class TestReferenceOps(OpsConformance):
    pass


class TestReferenceEndToEnd(EndToEndConformance):
    pass
