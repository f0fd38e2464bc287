"""Compile vllm-cuda's Triton kernels for AMD architectures with this plugin's launch configs,
on any machine (no AMD GPU, no ROCm): ``python -m vllm_rocm.compile_check [gfx942 gfx950 ...]``.

Each argument is an architecture, compiled with its table entry (``amd_launch_configs``, so an
unlisted one gets the generic fallback), or ``ARCH=ENTRY`` to compile another entry for it
(``gfx90a=amd``). Prints one JSON object per compiled launch (case, kernel, options, shared
memory bytes, error, problems) and exits 1 if any failed to compile or exceeds the
architecture's LDS. Needs ``TRITON_INTERPRET`` unset (the kernels must be real JIT functions).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from vllm_rocm.launch_amd import AMD_LAUNCH_CONFIGS, amd_launch_configs, warp_size_of

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vllm_rocm.compile_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("archs", nargs="*", default=["gfx942", "gfx950"], help="ARCH or ARCH=ENTRY")
    ap.add_argument("--case", action="append", help="only these kernel cases (default: all)")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        ap.error("TRITON_INTERPRET=1 is set: the kernels are interpreted functions, which do not compile; unset it")
    from triton.backends.compiler import GPUTarget
    from vllm_cuda.kernels import check_kernels

    failed = 0
    for spec in args.archs:
        arch, _, entry = spec.partition("=")
        configs = AMD_LAUNCH_CONFIGS[entry] if entry else amd_launch_configs(arch)
        target = GPUTarget("hip", arch, warp_size_of(arch))
        for report in check_kernels(configs, target, args.case):
            failed += not report.ok
            print(json.dumps({"arch": arch, "configs": configs.name, "case": report.case, "kernel": report.kernel,
                              "options": report.options, "shared_bytes": report.shared_bytes,
                              "error": report.error, "problems": report.problems}), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
