"""Tests of the Triton kernels of ``vllm_cuda``: on a GPU when there is one, else through Triton's
interpreter on the CPU (slow: keep shapes small).

``TRITON_INTERPRET`` is read when a kernel is decorated, so it is set here, before any test
module imports the kernels. The kernel test modules skip themselves when triton or vllm_cuda is
missing: a skip raised here would be an error whenever this folder is named on the command line
(pytest loads it as an initial conftest).
"""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

INTERPRETED = not torch.cuda.is_available()
if INTERPRETED:
    os.environ["TRITON_INTERPRET"] = "1"


def _fix_interpreter_loop_bounds() -> None:
    """Triton 3.6's interpreter turns a loaded scalar (a 1-element array) into a ``range`` bound
    with ``int(array)``, which numpy >= 2.4 refuses (triton-lang/triton#9171, fixed upstream by
    #9172). Apply the upstream fix: take the single element explicitly."""
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
    """Where the kernels run: the GPU, or the CPU under the Triton interpreter."""
    return torch.device("cuda") if not INTERPRETED else torch.device("cpu")


@pytest.fixture(scope="session")
def interpreted() -> bool:
    return INTERPRETED
