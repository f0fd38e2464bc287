"""Tests of vllm-rocm. No AMD GPU is reachable in CI: the shared Triton kernels run with the AMD
launch configs through Triton's interpreter on the CPU (on a ROCm machine with a GPU the same
tests run on the device), detection runs against a faked HIP torch, and the compile-only tests
build AMD code objects with the AMD backend that ships in Triton's wheels.

``TRITON_INTERPRET`` is read when a kernel is decorated, so it is set here, before any test
module imports the kernels (as ``tests/plugins/cuda/conftest.py`` does; the two folders also run
together).
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

ON_AMD_GPU = bool(getattr(torch.version, "hip", None)) and torch.cuda.is_available()
INTERPRETED = not ON_AMD_GPU
if INTERPRETED:
    os.environ["TRITON_INTERPRET"] = "1"


def _fix_interpreter_loop_bounds() -> None:
    """Triton 3.6's interpreter turns a loaded scalar (a 1-element array) into a ``range`` bound
    with ``int(array)``, which numpy >= 2.4 refuses (triton-lang/triton#9171, fixed upstream by
    #9172). Apply the upstream fix (the same as tests/plugins/cuda/conftest.py)."""
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "fixed_index", False):
        return

    def patch_lang_tensor(tensor, scope):  # type: ignore[no-untyped-def]
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patch_lang_tensor.fixed_index = True  # type: ignore[attr-defined]
    interpreter._patch_lang_tensor = patch_lang_tensor


if INTERPRETED and importlib.util.find_spec("triton") is not None:
    _fix_interpreter_loop_bounds()


@pytest.fixture(scope="session")
def device() -> torch.device:
    """Where the kernels run: the AMD GPU, or the CPU under the Triton interpreter."""
    return torch.device("cuda") if ON_AMD_GPU else torch.device("cpu")
