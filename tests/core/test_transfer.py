"""``to_device_many``: the step's host arrays in one copy per dtype, equal to one copy each."""

from __future__ import annotations

import numpy as np
import torch

from vllm_core.worker.transfer import pack_and_upload, to_device, to_device_many


def _items() -> list[tuple[np.ndarray, torch.dtype]]:
    rng = np.random.default_rng(0)
    return [
        (rng.integers(0, 1000, 7), torch.int64),
        (np.arange(7, dtype=np.int64), torch.int64),
        (rng.integers(0, 50, (3, 5)).astype(np.int32), torch.int32),  # a block table
        (np.array([4, 9, 2]), torch.int32),  # int64 on the host, int32 on the device
        (np.zeros(0, dtype=np.int64), torch.int64),
        (np.array([0.5, 2.0]), torch.float32),
    ]


def test_packed_upload_equals_one_copy_per_array() -> None:
    uploads: list[torch.Tensor] = []

    def upload(t: torch.Tensor) -> torch.Tensor:
        uploads.append(t)
        return t.clone()  # stands for the pinned host-to-device copy

    items = _items()
    packed = pack_and_upload(items, upload)
    assert len(uploads) == 3  # one per dtype
    for (array, dtype), got in zip(items, packed):
        want = to_device(array, torch.device("cpu"), dtype)
        assert got.dtype == dtype and got.shape == want.shape and torch.equal(got, want)


def test_to_device_many_on_the_cpu_is_to_device() -> None:
    items = _items()
    for (array, dtype), got in zip(items, to_device_many(items, torch.device("cpu"))):
        assert torch.equal(got, to_device(array, torch.device("cpu"), dtype)) and got.dtype == dtype
