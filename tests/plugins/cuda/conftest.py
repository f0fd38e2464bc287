"""Tests of the Triton kernels of ``vllm_cuda``: on a GPU when there is one, else through Triton's
interpreter on the CPU (slow: keep shapes small).

``TRITON_INTERPRET`` is read when a kernel is decorated, so it is set here, before any test
module imports the kernels. The kernel test modules skip themselves when triton or vllm_cuda is
missing: a skip raised here would be an error whenever this folder is named on the command line
(pytest loads it as an initial conftest).
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.triton_interpreter import fix_interpreter_loop_bounds

INTERPRETED = not torch.cuda.is_available()
if INTERPRETED:
    os.environ["TRITON_INTERPRET"] = "1"


if INTERPRETED:
    fix_interpreter_loop_bounds()


@pytest.fixture(scope="session")
def device() -> torch.device:
    """Where the kernels run: the GPU, or the CPU under the Triton interpreter."""
    return torch.device("cuda") if not INTERPRETED else torch.device("cpu")


@pytest.fixture(scope="session")
def interpreted() -> bool:
    return INTERPRETED
