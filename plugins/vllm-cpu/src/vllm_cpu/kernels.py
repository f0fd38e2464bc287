"""The native kernels of ``csrc/cpu_kernels.c``: built with the system C compiler at first use,
cached, loaded through ctypes.

Building takes about a second (plain C, no PyTorch headers); the library is cached under
``$VLLM_CPU_CACHE`` (default ``~/.cache/vllm_cpu``) keyed by the source, the flags and the
compiler, so later starts only load it. The kernels need AVX-512 (F, BW, VL, DQ) and AVX512-BF16;
``VLLM_CPU_KERNELS=0`` turns them off, and on a CPU without those features or without a C
compiler the platform runs on PyTorch's own ops (``kernels()`` returns None and says why once).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from ctypes import c_float, c_int, c_long, c_void_p
from pathlib import Path

import torch

from vllm_core.plugins.api import ConfigError
from vllm_cpu.memory import contiguous_copy

logger = logging.getLogger(__name__)

ENV_KERNELS = "VLLM_CPU_KERNELS"
ENV_CACHE = "VLLM_CPU_CACHE"
ENV_POOL_MODE = "VLLM_CPU_POOL"
ENV_GGUF_ACTIVATIONS = "VLLM_CPU_GGUF_ACTIVATIONS"
GGUF_ACTIVATIONS = {"int8": 1, "int8x2": 2}
"""How ``vc_linear_q`` quantizes activations per block of 32: ``int8`` (llama.cpp's Q8_0: one
int8 an element, amax / 127 steps) or ``int8x2`` (default: a second int8 for the remainder,
~15 bits, twice the dot products; see benchmarks/CPU_NOTES.md for what each costs and keeps)."""
ENV_GGUF_BF16_ROWS = "VLLM_CPU_GGUF_BF16_ROWS"
GGUF_BF16_ROWS = 24
"""From how many rows a bfloat16 call of ``vc_linear_q`` (Q4_0 / Q4_1 / Q8_0) dequantizes the
weights panel by panel and runs the bf16 GEMM instead of the int8x2 dot products (the output is
then ``--quantization none``'s, bit for bit); 0 turns it off. Break-even on this project's 2-core
AVX512 machine was 16-24 rows (benchmarks/CPU_NOTES.md §25)."""
POOL_MODES = ("auto", "pool", "alone")
"""Where work runs: ``auto`` (the calling thread alone while other processes want the cores or
after a stall, else the pool), ``pool`` (always the pool), ``alone`` (always the caller)."""
POOL_WAITS = ("spin", "yield", "passive")
"""How the pool's threads wait (``vc_pool_set_wait``): ``spin`` (busy-wait ``VLLM_CPU_SPIN_US``,
then sleep), ``yield`` (default: busy-wait 20 us, then ``sched_yield`` until the spin budget, then
sleep; a neighbour process gets a core at once), ``passive`` (sleep as soon as idle)."""


def parse_pool_env(raw: str) -> tuple[str, str]:
    """``VLLM_CPU_POOL``: comma-separated, at most one of ``POOL_MODES`` and one of ``POOL_WAITS``
    (``yield``, ``auto,passive``); each left out takes its default (``auto``, ``yield``)."""
    mode, wait = "", ""
    for token in (t.strip().lower() for t in raw.split(",")):
        if not token:
            continue
        if token in POOL_MODES and not mode:
            mode = token
        elif token in POOL_WAITS and not wait:
            wait = token
        else:
            twice = token in POOL_MODES or token in POOL_WAITS
            raise ConfigError(
                f"{ENV_POOL_MODE}={raw!r}: {token!r} is "
                + ("a second value of the same kind" if twice else "not a pool setting")
                + f"; give at most one of {', '.join(POOL_MODES)} and one of {', '.join(POOL_WAITS)} "
                "(e.g. VLLM_CPU_POOL=auto,yield), or unset it"
            )
    return mode or "auto", wait or "yield"
SOURCE = Path(__file__).with_name("csrc") / "cpu_kernels.c"
CFLAGS = [
    "-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16", "-mavx512vnni",
    "-mf16c", "-mfma",
    # no FMA contraction: the elementwise kernels round where the native ops round
    "-ffp-contract=off", "-fPIC", "-shared", "-pthread",
]
REQUIRED_CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16", "avx512_vnni")
"""Every CPU with AVX512-BF16 (Cooper Lake, Sapphire Rapids and later, Zen 4 and later) also has
AVX512-VNNI, which the GGUF quantized linear kernel (``vc_linear_q``) uses."""

_P, _I, _L, _F = c_void_p, c_int, c_long, c_float
_CHUNK_FN = ctypes.CFUNCTYPE(None, c_void_p, c_int)
_worker = threading.local()
SIGNATURES: dict[str, tuple[list[type], type | None]] = {
    "vc_pool_init": ([_I, _L], _I),
    "vc_pool_size": ([], _I),
    "vc_pool_set_spin": ([_L], None),
    "vc_pool_set_mode": ([_I], None),
    "vc_pool_set_wait": ([_I], _I),
    "vc_pool_stats": ([_P], None),
    "vc_pool_solo": ([], _I),
    "vc_parallel": ([_P, _I], None),
    "vc_linear_packed": ([_P, _L, _P, _P, _P, _L, _I, _I, _I, _I], None),
    "vc_decode_attention": ([_P, _L, _P, _P, _P, _I, _P, _P, _L, _I, _I, _I, _I, _I, _F, _I], None),
    "vc_rms_norm": ([_P, _L, _P, _P, _P, _I, _I, _F, _I], None),
    "vc_rotary": ([_P, _L, _P, _L, _I, _I, _I, _I, _P, _P, _I], None),
    "vc_cache_write": ([_P, _L, _P, _L, _P, _P, _P, _I, _L], None),
    "vc_silu_and_mul": ([_P, _P, _I, _I, _I], None),
    "vc_argmax_rows": ([_P, _L, _I, _I, _P], None),
    "vc_silu_mlp": ([_P, _L, _P, _P, _P, _P, _P, _L, _I, _I, _I, _I, _P, _I], None),
    "vc_embedding": ([_P, _I, _P, _L, _L, _P], _I),
    "vc_head_rms_norm": ([_P, _L, _P, _P, _I, _I, _I, _F, _I], None),
    "vc_plan_max_args": ([], _I),
    "vc_plan_kinds": ([], _I),
    "vc_plan_run": ([_P, _I], _I),
    "vc_linear_q": ([_P, _L, _P, _P, _P, _L, _I, _I, _I, _I, _I, _I, _I], _I),
    "vc_quant_set_precision": ([_I], None),
    "vc_quant_set_bf16_rows": ([_I], None),
    "vc_pack_q": ([_P, _L, _I, _I, _I, _P], _I),
    "vc_callback": ([_P, _I], None),
    "vc_lora": ([_P, _L, _P, _L, _P, _P, _P, _P, _I, _I, _I, _I, _I, _I, _I, _I], _I),
}
PLAN_KINDS = (
    "vc_linear_packed", "vc_rms_norm", "vc_rotary", "vc_cache_write", "vc_decode_attention", "vc_silu_and_mul",
    "vc_silu_mlp", "vc_embedding", "vc_head_rms_norm", "vc_linear_q", "vc_callback",
    "vc_lora",
)
"""The kernels a recorded plan can hold (``vllm_cpu.plan``), in the order of ``vc_plan_run``'s kinds."""


def gguf_bf16_rows_from_env() -> int:
    """``VLLM_CPU_GGUF_BF16_ROWS`` (a row count >= 0, 0: never), else ``GGUF_BF16_ROWS``."""
    from vllm_cpu.platform import int_from_env

    value = int_from_env(
        ENV_GGUF_BF16_ROWS, 0, "a row count",
        lambda: f"give an integer >= 0 (0 keeps bfloat16 GGUF layers on the int8 kernel at every batch size) or "
        f"unset it for {GGUF_BF16_ROWS}",
    )
    return GGUF_BF16_ROWS if value is None else value


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


AMX_CPU_FLAGS = ("amx_tile", "amx_bf16", "amx_int8")
_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA = 158, 0x1023, 18


def amx_unavailable() -> str | None:
    """Why AMX tiles cannot be used by this process (None: they can): the CPU flags
    (``amx_tile``, ``amx_bf16``, ``amx_int8``) and the kernel's permission for the tile data
    state (``arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)``, Linux 5.16+). Where None, ``vllm_cpu.amx`` times our bf16 kernel against oneDNN's
    matmul (which runs on AMX) per batched linear shape."""
    missing = [f for f in AMX_CPU_FLAGS if f not in cpu_flags()]
    if missing:
        return f"this CPU lacks {', '.join(missing)}"
    import platform

    if platform.machine() != "x86_64":
        return f"arch_prctl is x86_64's; this is {platform.machine()}"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_SYS_ARCH_PRCTL, _ARCH_REQ_XCOMP_PERM, _XFEATURE_XTILEDATA) != 0:
        return f"the kernel refused the AMX tile state (arch_prctl errno {ctypes.get_errno()})"
    return None


def _cache_dir() -> Path:
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "vllm_cpu")


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")


def build(cc: str) -> Path:
    """Compile the kernels (or reuse the cached build) and return the library's path."""
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(CFLAGS).encode() + version.encode()).hexdigest()[:16]
    lib = _cache_dir() / f"cpu_kernels-{key}.so"
    if lib.exists():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
        out = Path(tmp) / lib.name
        subprocess.run([cc, *CFLAGS, "-o", str(out), str(SOURCE), "-lm"], check=True,
                       capture_output=True, text=True)
        os.replace(out, lib)  # atomic: a concurrent build never sees a half-written library
    return lib


PANEL = 32
"""Output features per panel of a packed weight (``NR`` of the C kernels)."""


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """A [N, K] weight in the panel layout of ``vc_linear_packed``: float32 [P, K, 32], bfloat16
    [P, K/2, 32, 2] (pairs of k together), P = ceil(N / 32), the last panel padded with zeros; on
    huge pages (``vllm_cpu.memory``), as every decode step streams it."""
    n, k = weight.shape
    p = -(-n // PANEL)
    w = weight if p * PANEL == n else torch.cat([weight, weight.new_zeros(p * PANEL - n, k)])
    if weight.dtype == torch.bfloat16:
        return contiguous_copy(w.view(p, PANEL, k // 2, 2).permute(0, 2, 1, 3))
    return contiguous_copy(w.view(p, PANEL, k).transpose(1, 2))


class Kernels:
    """The loaded library: ``lib.vc_*`` with their ctypes signatures, and the pool's size."""

    def __init__(self, path: Path, num_threads: int, spin_us: int) -> None:
        self.path = path
        self.lib = ctypes.CDLL(str(path))
        for name, (args, res) in SIGNATURES.items():
            fn = getattr(self.lib, name)
            fn.argtypes, fn.restype = args, res
        self.num_threads = int(self.lib.vc_pool_init(num_threads, spin_us))
        mode, wait = parse_pool_env(os.environ.get(ENV_POOL_MODE, ""))
        self.set_pool_mode(mode)
        self.set_pool_wait(wait)
        self.set_gguf_activations(os.environ.get(ENV_GGUF_ACTIVATIONS, "").strip() or "int8x2")
        self.set_gguf_bf16_rows(gguf_bf16_rows_from_env())

    def set_gguf_activations(self, mode: str) -> None:
        """``int8`` or ``int8x2``: the activations' quantization of the GGUF kernel (``GGUF_ACTIVATIONS``)."""
        if mode not in GGUF_ACTIVATIONS:
            raise ConfigError(
                f"{ENV_GGUF_ACTIVATIONS}={mode!r} is not one of {', '.join(GGUF_ACTIVATIONS)}; unset it for int8x2"
            )
        self.lib.vc_quant_set_precision(GGUF_ACTIVATIONS[mode])

    def set_gguf_bf16_rows(self, rows: int) -> None:
        """Bfloat16 GGUF calls of at least ``rows`` rows dequantize to the bf16 GEMM (0: never);
        see ``GGUF_BF16_ROWS``."""
        self.lib.vc_quant_set_bf16_rows(rows)

    def set_pool_mode(self, mode: str) -> None:
        """``auto`` (default): work runs on the calling thread alone while other processes want
        the cores or after a worker was descheduled mid-chunk, else on the pool; ``pool``: always
        on the pool; ``alone``: always on the calling thread."""
        if mode not in POOL_MODES:
            raise ConfigError(f"{ENV_POOL_MODE}={mode!r} is not one of {', '.join(POOL_MODES)}")
        self.lib.vc_pool_set_mode(POOL_MODES.index(mode))

    def set_pool_wait(self, policy: str) -> None:
        """How idle threads wait: one of ``POOL_WAITS`` (results do not depend on it)."""
        if policy not in POOL_WAITS:
            raise ConfigError(f"{ENV_POOL_MODE} wait policy {policy!r} is not one of {', '.join(POOL_WAITS)}")
        self.lib.vc_pool_set_wait(POOL_WAITS.index(policy))

    def parallel(self, fn: Callable[[int], None], n_chunks: int) -> None:
        """``fn(0) .. fn(n_chunks - 1)`` on the pool's threads (this one included), for work made
        of PyTorch ops that release the GIL (each chunk should take a millisecond or more). The
        first exception of any chunk is raised here once all chunks have run."""
        errors: list[BaseException] = []
        # grad and inference modes are thread-local: the workers take the caller's
        inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

        def chunk(_ctx: int | None, i: int) -> None:
            try:
                if not getattr(_worker, "single", False):
                    # OpenMP's thread count is per thread: a worker would otherwise run
                    # oneDNN on a team of its own (one per core) on top of the pool
                    torch.set_num_threads(1)
                    _worker.single = True
                with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                    fn(i)
            except BaseException as exc:  # noqa: BLE001 - re-raised below, on the caller's thread
                errors.append(exc)

        callback = _CHUNK_FN(chunk)
        self.lib.vc_parallel(ctypes.cast(callback, c_void_p), n_chunks)
        if errors:
            raise errors[0]

    def solo(self) -> bool:
        """True when work would run on this thread alone now (the machine's other processes
        want the cores, or a worker was recently descheduled mid-chunk)."""
        return bool(self.lib.vc_pool_solo())

    def pool_stats(self) -> dict[str, float]:
        """Jobs run on the pool, stalls (a descheduled worker kept the caller waiting), load
        checks that found other processes wanting the cores, whether the caller runs alone now,
        and the smoothed count of other runnable threads."""
        out = (c_long * 5)()
        self.lib.vc_pool_stats(out)
        return {"jobs": out[0], "stalls": out[1], "busy_checks": out[2], "solo": out[3], "others": out[4] / 1000}


_state: dict[str, Kernels | None] = {}
_why_not: dict[str, str] = {}


def _load(num_threads: int, spin_us: int) -> Kernels | None:
    if os.environ.get(ENV_KERNELS, "1").strip().lower() in ("0", "off", "false", "no"):
        logger.info("vllm-cpu native kernels off (%s)", ENV_KERNELS)
        _why_not["reason"] = f"turned off by {ENV_KERNELS}={os.environ[ENV_KERNELS]!r}"
        return None
    missing = [f for f in REQUIRED_CPU_FLAGS if f not in cpu_flags()]
    if missing:
        logger.warning("vllm-cpu native kernels need %s; running on PyTorch ops", ", ".join(missing))
        _why_not["reason"] = f"this CPU lacks {', '.join(missing)}"
        return None
    cc = _compiler()
    if cc is None:
        logger.warning("vllm-cpu native kernels need a C compiler (gcc or $CC); running on PyTorch ops")
        _why_not["reason"] = "no C compiler (gcc or $CC)"
        return None
    try:
        path = build(cc)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        logger.warning("vllm-cpu native kernels failed to build (%s); running on PyTorch ops", detail.strip()[:500])
        _why_not["reason"] = f"the build failed: {detail.strip()[:500]}"
        return None
    k = Kernels(path, num_threads, spin_us)
    logger.info("vllm-cpu native kernels: %s, %d threads", path.name, k.num_threads)
    return k


ENV_SPIN_US = "VLLM_CPU_SPIN_US"


def load_kernels(num_threads: int, spin_us: int | None = None) -> Kernels | None:
    """The process's kernels, loaded by the first call (whose ``num_threads`` sizes the pool for
    good); None when they cannot run here."""
    if "kernels" not in _state:
        if spin_us is None:
            spin_us = int(os.environ.get(ENV_SPIN_US, "") or 2000)
        _state["kernels"] = _load(num_threads, spin_us)
    return _state["kernels"]


def loaded_kernels() -> Kernels | None:
    """The kernels if something in this process has loaded them, else None."""
    return _state.get("kernels")


def unavailable_reason() -> str | None:
    """Why ``load_kernels`` gave None in this process; None when the kernels run or no load was tried."""
    if "kernels" not in _state:
        return None
    return _why_not.get("reason") if _state["kernels"] is None else None
