"""vllm-lora's conformance class against every installed CPU-side platform (and cuda on a GPU);
a vendor runs the same class with ``--vllm-platform NAME``."""

from __future__ import annotations

from typing import Any

import pytest
from vllm_lora.testing import LoRAOpsConformance

from tests.plugins.lora.test_lora_oracle import DEVICES


@pytest.fixture(params=DEVICES)
def conformance_platform(request: pytest.FixtureRequest) -> Any:
    from vllm_core.platforms import resolve_platform

    return resolve_platform(request.param)


class TestLoRAOps(LoRAOpsConformance):
    pass
