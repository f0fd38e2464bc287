"""``CPUSampler``: the reference sampler with its argmax on the C kernels.

PyTorch's argmax runs on one thread here (the C kernels own the cores, so torch is set to one
thread) and took 4 ms a step for 64 rows of a 49152-entry vocabulary in float32 (0.5 s of the
batched W1 workload); ``vc_argmax_rows`` reads the rows on the pool at memory speed. The result
is torch's: the first index of the largest value, NaN rows handed back to torch.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from vllm_core.plugins.api import ReferenceSampler
from vllm_cpu.kernels import Kernels, loaded_kernels


class CPUSampler(ReferenceSampler):
    """The reference pipeline; greedy and sampled tokens are argmaxes on the C kernels."""

    name: ClassVar[str] = "cpu"

    def __init__(self, kernels: Kernels | None = None) -> None:
        self.kernels = kernels if kernels is not None else loaded_kernels()

    def argmax(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.bfloat16, torch.float16) and self.kernels is not None:
            x = x.float()  # exact: the kernel's argmax of the widened values is torch's of these
        if (
            self.kernels is None or x.dim() != 2 or x.dtype != torch.float32 or x.device.type != "cpu"
            or x.stride(1) != 1 or x.shape[0] == 0 or x.shape[1] == 0
        ):
            return super().argmax(x)
        out = torch.empty(x.shape[0], dtype=torch.int64)
        self.kernels.lib.vc_argmax_rows(x.data_ptr(), x.stride(0), x.shape[0], x.shape[1], out.data_ptr())
        nan_rows = (out < 0).nonzero().flatten()
        if nan_rows.numel():
            out[nan_rows] = super().argmax(x[nan_rows])
        return out
