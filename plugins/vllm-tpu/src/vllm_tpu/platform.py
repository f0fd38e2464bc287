"""``TPUPlatform``: vllm-core on a torch-xla device.

Available when torch-xla imports and a TPU is present, or on XLA's CPU backend when
``PJRT_DEVICE=CPU`` and ``VLLM_TPU_ALLOW_CPU=1`` (a correctness platform: every graph the TPU
would run, compiled for the host). Each step is padded to a static step shape (token buckets
16, 32, ... up to ``max_num_batched_tokens``; request buckets 8, 16, ... up to
``max_num_seqs``; the block table at its full width), every shape is compiled at start-up
(``warm_up``), and each step ends with one ``torch_xla.sync()`` that runs the step's graph.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Literal

import torch

from vllm_core.plugins.api import (
    ModelRunnerOutput,
    Ops,
    Platform,
    SchedulerOutput,
    StepShapes,
    cpu_memory_info,
)
from vllm_tpu.compilation import RecompilationGuard, compile_count, init_persistent_cache, persistent_cache_hits
from vllm_tpu.ops import XLAOps
from vllm_tpu.warmup import precompile

logger = logging.getLogger(__name__)

ENV_ALLOW_CPU = "VLLM_TPU_ALLOW_CPU"
ENV_MIN_TOKENS = "VLLM_TPU_MIN_TOKEN_BUCKET"
ENV_MIN_REQS = "VLLM_TPU_MIN_REQUEST_BUCKET"


def _tpu_absent_reason() -> str | None:
    """None when a TPU runtime and device are present, else what is missing."""
    if importlib.util.find_spec("libtpu") is None:
        return "libtpu is not installed (pip install 'vllm-tpu[tpu]' on a TPU VM)"
    if not (glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*")):
        return "no TPU device (/dev/accel* and /dev/vfio/* are absent)"
    return None


class TPUPlatform(Platform):
    """Google TPUs through torch-xla (or XLA:CPU for tests)."""

    name: ClassVar[str] = "tpu"
    device_type: ClassVar[str] = "xla"
    priority: ClassVar[int] = 20
    distribution: ClassVar[str] = "vllm-tpu"
    default_max_num_batched_tokens: ClassVar[int] = 512
    inference_mode: ClassVar[Literal["inference_mode", "no_grad"]] = "no_grad"

    @classmethod
    def is_available(cls) -> str | None:
        pjrt = os.environ.get("PJRT_DEVICE")
        allow_cpu = os.environ.get(ENV_ALLOW_CPU) == "1"
        try:
            import torch_xla  # noqa: F401
        except (ImportError, OSError, RuntimeError) as exc:  # missing, or an ABI mismatch with torch
            return (f"torch-xla does not import ({type(exc).__name__}: {exc}); vllm-tpu needs torch==2.9.* "
                    f"with torch-xla==2.9.* (installed torch: {torch.__version__})")
        if pjrt == "CPU":
            if allow_cpu:
                return None
            return (f"PJRT_DEVICE=CPU selects XLA's CPU backend, a correctness platform only; set "
                    f"{ENV_ALLOW_CPU}=1 to run on it")
        if pjrt not in (None, "", "TPU"):
            return f"PJRT_DEVICE={pjrt}: the tpu platform runs on PJRT_DEVICE=TPU (or CPU with {ENV_ALLOW_CPU}=1)"
        absent = _tpu_absent_reason()
        if absent is None:
            return None
        hint = f"; PJRT_DEVICE=CPU {ENV_ALLOW_CPU}=1 runs it on XLA's CPU backend" if allow_cpu else ""
        return f"{absent}{hint}"

    def __init__(self) -> None:
        super().__init__()
        self.guard = RecompilationGuard()
        self.warmup_compiles: int | None = None
        """Graphs compiled by ``warm_up`` (None before it)."""
        self.warmup_seconds: float | None = None

    def device(self, index: int = 0) -> torch.device:
        import torch_xla

        return torch_xla.device(index)

    @property
    def on_cpu_backend(self) -> bool:
        return os.environ.get("PJRT_DEVICE") == "CPU"

    def setup(self) -> None:
        init_persistent_cache()

    def capabilities(self) -> frozenset[str]:
        return frozenset({"xla"})

    def make_ops(self) -> Ops:
        return XLAOps()

    def sampler_name(self) -> str:
        return "xla"

    def supported_dtypes(self) -> tuple[torch.dtype, ...]:
        return (torch.float32, torch.bfloat16)

    def memory_info(self) -> tuple[int, int]:
        """Host memory on XLA:CPU; the TPU's HBM otherwise."""
        if self.on_cpu_backend:
            return cpu_memory_info()
        import torch_xla.core.xla_model as xm

        info = xm.get_memory_info(self.device())
        total = int(info["bytes_limit"])
        return total - int(info["bytes_used"]), total

    def make_generator(self, seed: int) -> torch.Generator:
        """Host generators: the sampler draws its noise on the host and moves it once."""
        gen = torch.Generator()
        gen.manual_seed(seed)
        return gen

    def synchronize(self) -> None:
        import torch_xla
        import torch_xla.core.xla_model as xm

        torch_xla.sync()
        xm.wait_device_ops()

    def inference_context(self) -> contextlib.AbstractContextManager[Any]:
        """``no_grad`` around the step, then one ``torch_xla.sync()``: the step's graph (KV
        writes, logits, sampler) runs as one, and the guard counts what it compiled."""
        return self._step()

    @contextlib.contextmanager
    def _step(self) -> Iterator[None]:
        import torch_xla

        with torch.no_grad():
            yield
        torch_xla.sync()
        self.guard.check("a step")

    def step_shapes(
        self, max_num_seqs: int, max_num_batched_tokens: int, max_model_len: int, block_size: int
    ) -> StepShapes:
        max_blocks = -(-max_model_len // block_size)
        shapes = StepShapes.powers_of_two(
            max_num_batched_tokens, max_num_seqs,
            min_tokens=int(os.environ.get(ENV_MIN_TOKENS, "16")), min_reqs=int(os.environ.get(ENV_MIN_REQS, "8")),
        )
        return StepShapes(shapes.token_buckets, shapes.request_buckets, (max_blocks,))

    def warm_up(
        self, execute: Callable[[SchedulerOutput], ModelRunnerOutput], shapes: StepShapes,
        max_model_len: int, block_size: int, num_blocks: int,
    ) -> None:
        """Compile every step shape now, then arm the recompilation guard."""
        import torch_xla

        torch_xla.sync()  # weights and KV cache still pending from loading: not part of any step's graph
        hits = persistent_cache_hits()
        compiled, seconds = precompile(execute, shapes, max_model_len, block_size, num_blocks, compile_count)
        self.warmup_compiles, self.warmup_seconds = compiled, seconds
        logger.info(
            "XLA: warm-up compiled %d graphs in %.1f s (%d loaded from the persistent cache)",
            compiled, seconds, persistent_cache_hits() - hits,
        )
        self.guard.arm()
