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


class TestTritonLoRAOpsInterpreted(LoRAOpsConformance):
    """The same checks with the Triton kernels forced (interpreted on the CPU without a GPU)."""

    @pytest.fixture
    def conformance_platform(self, monkeypatch: pytest.MonkeyPatch) -> Any:
        import torch

        from tests.conftest import import_or_require
        from vllm_core.platforms import resolve_platform

        import_or_require("triton", "triton")
        monkeypatch.setenv("VLLM_LORA_OPS", "triton")
        return resolve_platform("cuda" if torch.cuda.is_available() else "reference")
