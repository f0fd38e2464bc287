"""Measured device copy bandwidth (the memory-bandwidth bound of decode throughput).

Copies a 2 GiB buffer device-to-device; bandwidth = 2 x bytes / time (read + write).
"""

from __future__ import annotations

import json
import sys

import torch


def copy_bandwidth(nbytes: int = 2 << 30, iters: int = 20) -> float:
    src = torch.empty(nbytes // 2, dtype=torch.float16, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000 / iters
    return 2 * nbytes / seconds


if __name__ == "__main__":
    bw = copy_bandwidth()
    out = {"device": torch.cuda.get_device_name(), "copy_bandwidth_bytes_per_s": bw}
    json.dump(out, sys.stdout)
    print()
