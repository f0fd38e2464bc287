"""The conformance kit against the acme example platform (``examples/acme-platform``), as a
vendor runs it: ``pytest tests/plugins/acme --vllm-platform acme`` (``nox -s acme``)."""

from __future__ import annotations

import pytest

from tests.conftest import import_or_require
from vllm_core.platforms.interface import Platform
from vllm_core.testing.conformance import AttentionConformance, EndToEndConformance, OpsConformance

import_or_require("acme_vllm", "acme")


@pytest.fixture
def conformance_platform() -> Platform:
    """acme, also without ``--vllm-platform acme``: a plain ``pytest tests`` must not skip the kit."""
    from vllm_core.platforms import resolve_platform

    return resolve_platform("acme")


class TestAcmeAttention(AttentionConformance):
    pass


class TestAcmeOps(OpsConformance):
    pass


class TestAcmeEndToEnd(EndToEndConformance):
    pass
