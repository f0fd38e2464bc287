"""Host-to-device copies that never make the host wait for the device.

Copying from ordinary (pageable) host memory makes CUDA synchronise the stream first, which would
stall the host behind the step in flight and defeat async scheduling. Going through pinned memory
makes the copy one more queued operation.
"""

from __future__ import annotations

import numpy as np
import torch


def to_device(data: torch.Tensor | np.ndarray, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``data`` on ``device`` (as ``dtype``), copied without a host-device synchronisation."""
    t = torch.from_numpy(data) if isinstance(data, np.ndarray) else data
    if dtype is not None and t.dtype != dtype:
        t = t.to(dtype)
    if device.type == "cpu":
        return t
    if device.type != "cuda":  # pinned memory is a CUDA notion (XLA copies from any host memory)
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
