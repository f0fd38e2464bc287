"""The Triton interpreter as the GPU-kernel tests use it on the CPU (cuda, rocm folders)."""

from __future__ import annotations

import importlib.util


def fix_interpreter_loop_bounds() -> None:
    """Triton 3.6's interpreter turns a loaded scalar (a 1-element array) into a ``range`` bound
    with ``int(array)``, which numpy >= 2.4 refuses (triton-lang/triton#9171, fixed upstream by
    #9172). Apply the upstream fix: take the single element explicitly. No-op without triton."""
    if importlib.util.find_spec("triton") is None:
        return
    from triton.runtime import interpreter

    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "fixed_index", False):
        return

    def patch_lang_tensor(tensor, scope):  # type: ignore[no-untyped-def]
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patch_lang_tensor.fixed_index = True  # type: ignore[attr-defined]
    interpreter._patch_lang_tensor = patch_lang_tensor
