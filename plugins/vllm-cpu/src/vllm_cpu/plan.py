"""Recorded plans: one step's kernel calls, captured once and replayed by one C call.

A decode step of a small model on the CPU is ~240 kernel calls (8 a layer); between them runs
Python: module calls, views, output allocations, argument checks, ctypes conversions, 5-10 us a
call, ~2.5 ms of a 13 ms token for SmolLM2. ``record`` runs the step once with the ops' library
replaced by a recorder: every kernel call is executed and appended, with its arguments, to a
list that ``vc_plan_run`` replays later in one call. It is the CPU's counterpart of a CUDA graph,
under the same rules: the step must do all its arithmetic in kernels, and every pointer it
passes must stay valid and keep its meaning (persistent inputs, tensors allocated during the
capture, the weights, the KV cache).

A dispatch-mode guard enforces the first rule: a step that runs any tensor op other than views
and allocations (a cast, an embedding lookup outside the kernels, ``.item()``) is refused with
``NotCapturable`` naming the ops, and runs eagerly. The exception are the few ops in
``EAGER_WRITES`` (an ``out=`` add, an in-place copy): they only write into memory that already
exists, so the plan keeps them (with their tensors) and replays them with PyTorch between the
kernel calls recorded before and after them. EAGLE-3's hidden-state taps are such writes (the
sum entering a decoder layer, into a persistent buffer), so a target with taps keeps its plans.
The tensors allocated during the capture are kept by the plan, as are the ops' own buffers
(``CPUOps.keep_alive``).
"""

from __future__ import annotations

import ctypes
import functools
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vllm_cpu.kernels import PLAN_KINDS, SIGNATURES

aten = torch.ops.aten
PLAN_MAX_ARGS = 16
"""Arguments per recorded call (``PLAN_MAX_ARGS`` of the C side; checked when a plan is made)."""
_CALL_BYTES = 8 + 8 * PLAN_MAX_ARGS
"""One ``plan_call``: the kind, then the arguments."""

_ALLOCATIONS = frozenset({aten.empty, aten.empty_strided})
_VIEWS = frozenset({
    aten.view, aten._unsafe_view, aten._reshape_alias, aten.reshape, aten.split, aten.split_with_sizes,
    aten.slice, aten.select, aten.narrow, aten.unsqueeze, aten.squeeze, aten.transpose, aten.t,
    aten.permute, aten.expand, aten.alias, aten.detach, aten.as_strided, aten.unbind,
})


EAGER_WRITES = frozenset({aten.add.out, aten.copy_.default})
"""Ops a plan replays with PyTorch, in their place between the kernel calls: each writes into a
tensor that exists before it runs (``out=`` / in place), under the rule every recorded pointer
follows (its memory keeps its meaning between replays)."""


_trusted = threading.local()


@contextmanager
def trusted_ops() -> Iterator[None]:
    """Tensor ops run inside this block pass a capture's guard unrecorded: the code that runs
    them is itself replayed by a recorded kernel call (``vc_callback``) or is one-off work
    (timing a shape at its first call) that the plan need not repeat."""
    _trusted.depth = getattr(_trusted, "depth", 0) + 1
    try:
        yield
    finally:
        _trusted.depth -= 1


_callback_errors: list[BaseException] = []


def callback_failed(exc: BaseException) -> None:
    """Note an exception of a recorded Python callback (which cannot raise through C):
    ``Plan.run`` raises it once the replay returns."""
    _callback_errors.append(exc)


class NotCapturable(RuntimeError):
    """The step cannot be recorded: it ran tensor ops outside the kernels, or a kernel that a
    plan cannot hold."""


class _Guard(TorchDispatchMode):
    """Lets views and allocations through (keeping what was allocated) and notes every other op.

    With ``reuse`` (the allocations of an earlier capture of the same step for at least as many
    rows), the k-th allocation is a view of ``reuse[k]`` when that one is large enough: plans
    never run at the same time, so the buckets of one runner share their buffers.
    """

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """False: no ``torch._disable_dynamo`` wrapper around ``__torch_dispatch__``. The wrapper
        imports ``torch._dynamo`` at the first dispatch (0.5-1 s of start-up on 2 cores, for the
        first plan recorded); nothing is compiled inside a recording."""
        return False

    def __init__(self, reuse: list[torch.Tensor], position: Callable[[], int] = lambda: 0) -> None:
        """``position()``: how many kernel calls were recorded so far (where an eager write goes)."""
        super().__init__()
        self.reuse = reuse
        self.position = position
        self.allocated: list[torch.Tensor] = []
        self.rejected: set[str] = set()
        self.eager: list[tuple[int, Callable[[], Any]]] = []
        """(kernel calls before it, the op with its arguments) of each ``EAGER_WRITES`` op."""

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if getattr(_trusted, "depth", 0):
            return out
        packet = func.overloadpacket
        if packet in _ALLOCATIONS:
            k = len(self.allocated)
            if k < len(self.reuse):
                old = self.reuse[k]
                if old.dtype == out.dtype and old.numel() >= out.numel() and out.is_contiguous():
                    out = old.view(-1)[: out.numel()].view(out.shape)
            self.allocated.append(out)
        elif func in EAGER_WRITES:
            self.eager.append((self.position(), functools.partial(func, *args, **(kwargs or {}))))
        elif packet not in _VIEWS:
            self.rejected.add(str(func))
        return out


def _encode(kind: int, argtypes: list[type], args: tuple[Any, ...]) -> bytes:
    """One ``plan_call``: the kind, then each argument as int64 (pointers, sizes, flags; None is
    NULL) or double (``c_float`` arguments), zero-padded to ``PLAN_MAX_ARGS``."""
    fmt: list[str] = ["<q"]
    values: list[float] = [kind]
    for argtype, arg in zip(argtypes, args, strict=True):
        if argtype is ctypes.c_float:
            fmt.append("d")
            values.append(float(arg))
        else:
            fmt.append("q")
            values.append(0 if arg is None else int(arg))
    fmt.append(f"{8 * (PLAN_MAX_ARGS - len(args))}x")
    return struct.pack("".join(fmt), *values)


class _Recorder:
    """Stands in for the ctypes library: calls through and appends each call."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib
        self.calls: list[bytes] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        fn = getattr(self._lib, name)
        if name not in PLAN_KINDS:
            raise NotCapturable(f"kernel {name} cannot be recorded; a plan holds {', '.join(PLAN_KINDS)}")
        kind, argtypes = PLAN_KINDS.index(name), SIGNATURES[name][0]

        def call(*args: Any) -> Any:
            self.calls.append(_encode(kind, argtypes, args))
            return fn(*args)

        return call


class Plan:
    """A recorded step: its calls, the tensors they point into, and the step's output tensor
    (rewritten by every ``run``)."""

    def __init__(
        self, lib: Any, calls: list[bytes], allocated: list[torch.Tensor], keep: list[torch.Tensor],
        output: torch.Tensor, eager: list[tuple[int, Callable[[], Any]]] | None = None,
        callbacks: list[object] | None = None,
    ) -> None:
        """``eager``: (kernel calls before it, op) of each write replayed with PyTorch, in order;
        ``callbacks``: the Python callbacks that recorded ``vc_callback`` calls point to."""
        self._lib = lib
        self._calls = ctypes.create_string_buffer(b"".join(calls), len(calls) * _CALL_BYTES)
        self.num_calls = len(calls)
        self._eager = list(eager or [])
        self._callbacks = callbacks or []
        """Python callbacks that recorded ``vc_callback`` calls point to (oneDNN linears)."""
        self.allocated = allocated
        """The tensors the capture allocated, in order (``record``'s ``reuse`` for a smaller one)."""
        self._keep = keep
        self.output = output
        self.replays = 0
        """How many times ``run`` replayed the plan."""

    def kernel_counts(self) -> dict[str, int]:
        """Kernel name -> how many calls of it the plan holds."""
        raw = self._calls.raw
        counts: dict[str, int] = {}
        for i in range(self.num_calls):
            (kind,) = struct.unpack_from("<q", raw, i * _CALL_BYTES)
            name = PLAN_KINDS[kind]
            counts[name] = counts.get(name, 0) + 1
        return counts

    def storages(self) -> dict[int, int]:
        """Address -> bytes of each memory block the plan holds."""
        return {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in self._keep}

    @property
    def num_eager(self) -> int:
        """Writes this plan replays with PyTorch between its kernel calls."""
        return len(self._eager)

    def _run_calls(self, start: int, end: int) -> None:
        if end <= start:
            return
        bad = self._lib.vc_plan_run(ctypes.addressof(self._calls) + start * _CALL_BYTES, end - start)
        if _callback_errors:
            errors = list(_callback_errors)
            _callback_errors.clear()
            raise RuntimeError(f"recorded plan: a Python callback failed ({errors[0]!r})") from errors[0]
        if bad != -1:
            raise RuntimeError(f"recorded plan: call {start + bad} of {self.num_calls} has an unknown kind")

    def run(self) -> torch.Tensor:
        self.replays += 1
        start = 0
        for position, write in self._eager:
            self._run_calls(start, position)
            write()
            start = position
        self._run_calls(start, self.num_calls)
        return self.output


def record(ops: Any, step: Callable[[], torch.Tensor], reuse: list[torch.Tensor] | None = None) -> Plan:
    """Run ``step`` once, eagerly, with ``ops.lib`` (``CPUOps``) recording every kernel call;
    the plan replays them. Raises ``NotCapturable`` when the step cannot be replayed that way.
    Call ``step`` once before, unrecorded, so lazy work (packing weights, growing scratch
    buffers) is done. ``reuse``: ``Plan.allocated`` of a plan of the same step for as many rows
    or more, whose buffers this one may share (the two must never run at the same time)."""
    lib = ops.lib
    if lib is None:
        raise NotCapturable("the C kernels are not loaded")
    if int(lib.vc_plan_max_args()) != PLAN_MAX_ARGS or int(lib.vc_plan_kinds()) != len(PLAN_KINDS):
        raise NotCapturable("the kernel library's plan layout differs from vllm_cpu.plan's")
    recorder = _Recorder(lib)
    guard = _Guard(reuse or [], lambda: len(recorder.calls))
    take_callbacks: Callable[[], list[object]] = getattr(ops, "take_callbacks", list)
    take_callbacks()
    ops.lib = recorder
    try:
        with guard:
            output = step()
    finally:
        ops.lib = lib
        callbacks = take_callbacks()
    if guard.rejected:
        raise NotCapturable(
            f"the step ran tensor ops outside the kernels: {', '.join(sorted(guard.rejected))}"
        )
    return Plan(lib, recorder.calls, guard.allocated, [*guard.allocated, *ops.keep_alive(), output], output,
                guard.eager, callbacks)
