"""The tpu tests run on XLA's CPU backend: the environment is set before torch-xla starts.

``VLLM_XLA_CHECK_RECOMPILATION=1`` makes every compilation after warm-up an error in these tests.
XLA:CPU's LLVM backend at its lowest optimisation level compiles about four times faster; the
graphs are the same, only the host code generated for them differs.
"""

from __future__ import annotations

import os

os.environ.setdefault("PJRT_DEVICE", "CPU")
os.environ.setdefault("VLLM_TPU_ALLOW_CPU", "1")
os.environ.setdefault("VLLM_XLA_CHECK_RECOMPILATION", "1")
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
