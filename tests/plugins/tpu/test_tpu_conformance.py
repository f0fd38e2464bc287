"""The conformance kit against the tpu platform on XLA:CPU, as a vendor runs it:
``pytest tests/plugins/tpu --vllm-platform tpu`` (``nox -s tpu``)."""

from __future__ import annotations

import pytest

from tests.conftest import import_or_require
from vllm_core.platforms.interface import Platform
from vllm_core.testing.conformance import AttentionConformance, EndToEndConformance, OpsConformance

import_or_require("torch_xla", "tpu")
import_or_require("vllm_tpu", "tpu")


@pytest.fixture(scope="module")
def conformance_platform() -> Platform:
    """tpu, also without ``--vllm-platform tpu``: a plain ``pytest tests`` must not skip the kit."""
    from vllm_core.platforms import resolve_platform

    return resolve_platform("tpu")


class TestTPUAttention(AttentionConformance):
    pass


class TestTPUOps(OpsConformance):
    pass


class TestTPUEndToEnd(EndToEndConformance):
    pass
