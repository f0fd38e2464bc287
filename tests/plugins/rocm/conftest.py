"""Tests of vllm-rocm. No AMD GPU is reachable in CI: the shared Triton kernels run with the AMD
launch configs through Triton's interpreter on the CPU (on a ROCm machine with a GPU the same
tests run on the device), detection runs against a faked HIP torch, and the compile-only tests
build AMD code objects with the AMD backend that ships in Triton's wheels.

``TRITON_INTERPRET`` is read when a kernel is decorated, so it is set here, before any test
module imports the kernels (as ``tests/plugins/cuda/conftest.py`` does; the two folders also run
together).
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.triton_interpreter import fix_interpreter_loop_bounds

ON_AMD_GPU = bool(getattr(torch.version, "hip", None)) and torch.cuda.is_available()
INTERPRETED = not ON_AMD_GPU
if INTERPRETED:
    os.environ["TRITON_INTERPRET"] = "1"


if INTERPRETED:
    fix_interpreter_loop_bounds()


@pytest.fixture(scope="session")
def device() -> torch.device:
    """Where the kernels run: the AMD GPU, or the CPU under the Triton interpreter."""
    return torch.device("cuda") if ON_AMD_GPU else torch.device("cpu")
