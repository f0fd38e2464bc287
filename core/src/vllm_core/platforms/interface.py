"""The ``Platform`` interface every hardware backend implements."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from vllm_core.platforms.ops import Ops

if TYPE_CHECKING:
    from vllm_core.attention.backend import AttentionBackend
    from vllm_core.config import CacheConfig
    from vllm_core.core.sched_output import ModelRunnerOutput, SchedulerOutput
    from vllm_core.distributed.communicator import Communicator
    from vllm_core.worker.graph_runner import GraphRunner
    from vllm_core.worker.step_shapes import StepShapes


class Platform(ABC):
    """A place the model can run: a device, its kernels and its memory.

    Subclasses are registered through ``register_platforms``. Class attributes describe the
    platform without instantiating it; ``is_available`` probes the machine.
    """

    name: ClassVar[str]
    """Short name used by ``--device`` and ``VLLM_CORE_DEVICE`` (``reference``, ``cpu``, ``cuda``)."""
    device_type: ClassVar[str]
    """torch device type (``cpu``, ``cuda``, ``xla``)."""
    priority: ClassVar[int] = 0
    """Higher wins among available platforms."""
    distribution: ClassVar[str] = "vllm-core"
    """The package that ships the platform (for messages)."""
    dist_backend: ClassVar[str] = "gloo"
    """torch.distributed backend of the tensor / pipeline parallel groups (``gloo``, ``nccl``, a
    vendor's); ``make_communicator`` runs the collectives on it."""
    is_accelerator: ClassVar[bool] = False
    """True when the KV cache is sized from device memory (``gpu_memory_utilization``)."""
    async_scheduling: ClassVar[bool] = False
    """Default of ``SchedulerConfig.async_scheduling``: overlap host scheduling with device work."""
    default_block_size: ClassVar[int] = 16
    """Tokens per KV block when ``CacheConfig.block_size`` is left unset."""
    default_max_num_batched_tokens: ClassVar[int] = 8192
    """Token budget of a step when ``SchedulerConfig.max_num_batched_tokens`` is left unset (with
    chunked prefill off, at least ``max_model_len``)."""
    inference_mode: ClassVar[Literal["inference_mode", "no_grad"]] = "inference_mode"
    """How the runner turns autograd off around a step: ``torch.inference_mode`` (fastest where
    supported) or ``torch.no_grad`` (backends whose tensors cannot be inference tensors, XLA)."""

    @classmethod
    @abstractmethod
    def is_available(cls) -> str | None:
        """None when the platform can run here, else the reason it cannot."""

    def __init__(self) -> None:
        self._ops = self.make_ops()

    # -------------------------------------------------------------------------- device
    def device(self, index: int = 0) -> torch.device:
        return torch.device(self.device_type, index) if self.device_type != "cpu" else torch.device("cpu")

    @abstractmethod
    def memory_info(self) -> tuple[int, int]:
        """(free, total) bytes of the memory the KV cache lives in."""

    def capabilities(self) -> frozenset[str]:
        """Features this platform offers; attention backends declare which they require."""
        return frozenset({self.device_type})

    def supported_dtypes(self) -> tuple[torch.dtype, ...]:
        return (torch.float32, torch.bfloat16, torch.float16)

    def setup(self) -> None:
        """Process-wide settings (threads, allocator) before the model loads."""

    # ------------------------------------------------------------------------------ ops
    def make_ops(self) -> Ops:
        """The platform's kernels; the base ``Ops`` supplies native fallbacks."""
        return Ops()

    @property
    def ops(self) -> Ops:
        return self._ops

    # ------------------------------------------------------------------------ attention
    def select_attention_backend(
        self, head_size: int, dtype: torch.dtype, forced: str | None = None
    ) -> type[AttentionBackend]:
        """The highest-priority registered backend whose required capabilities this platform
        has and which supports the head size and dtype (``forced`` picks one by name)."""
        from vllm_core.attention.selector import select_backend

        return select_backend(self.capabilities(), head_size, dtype, forced)

    def sampler_name(self) -> str:
        """Registered sampler this platform prefers."""
        return "reference"

    # -------------------------------------------------------------------------- memory
    def kv_cache_bytes(self, cache_config: CacheConfig, model_bytes: int) -> int:
        """Default KV cache size when the user gave none.

        CPU-like platforms take ``cpu_kv_cache_fraction`` of free memory, at most
        ``cpu_kv_cache_max_bytes``; accelerators ``gpu_memory_utilization`` of the total
        minus what is already in use (the model).
        """
        free, total = self.memory_info()
        if self.is_accelerator:
            used = total - free
            return max(int(total * cache_config.gpu_memory_utilization) - used, 0)
        return min(int(free * cache_config.cpu_kv_cache_fraction), cache_config.cpu_kv_cache_max_bytes)

    def prepare_kv_cache(self, cache_config: CacheConfig) -> int | None:
        """Called once per engine start before the model loads. A platform that can size its KV
        cache without the model may set that memory aside now and prepare it while the weights
        load (the cpu plugin faults its pages in on background threads); it returns the bytes set
        aside, which then are the cache's budget (``num_gpu_blocks_override`` still wins). None,
        the default: nothing prepared, the cache is sized after loading as usual.
        ``kv_cache_allocated`` always follows, also when the start fails."""
        return None

    def kv_cache_allocated(self) -> None:
        """The engine's KV cache is allocated (or its start failed): release whatever
        ``prepare_kv_cache`` set aside that ``allocate_kv_cache`` did not hand out."""

    def allocate_kv_cache(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """A zero-filled tensor for one layer's KV cache (``shape`` from the attention backend's
        ``kv_cache_shape``) on this platform's device. Platforms override it to place the cache
        in memory that suits their kernels (large pages, a NUMA node, memory prepared by
        ``prepare_kv_cache``)."""
        return torch.zeros(shape, dtype=dtype, device=self.device())

    def to_host_async(self, tensor: torch.Tensor) -> Callable[[], list[int]]:
        """Start copying a small integer tensor to the host; the returned function waits for the
        copy and gives the values. CPU platforms just read it."""
        return tensor.tolist

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on CPU)."""

    def reset_peak_memory(self) -> None:
        """Start a new peak-memory measurement (accelerators; no-op elsewhere)."""

    def peak_memory_bytes(self) -> int | None:
        """Peak bytes the framework allocated since ``reset_peak_memory``; None where unknown."""
        return None

    def current_memory_bytes(self) -> int | None:
        """Bytes the framework holds now; None where unknown."""
        return None

    def inference_context(self) -> contextlib.AbstractContextManager[Any]:
        """The autograd mode of a step (``inference_mode``)."""
        return torch.inference_mode() if self.inference_mode == "inference_mode" else torch.no_grad()

    def make_generator(self, seed: int) -> torch.Generator:
        """A seeded random generator for sampling, where the platform wants it (default: on
        the device; a backend without device generators may keep them on the host)."""
        gen = torch.Generator(device=self.device())
        gen.manual_seed(seed)
        return gen

    def step_shapes(
        self, max_num_seqs: int, max_num_batched_tokens: int, max_model_len: int, block_size: int
    ) -> StepShapes | None:
        """Fixed shapes for every step (``vllm_core.worker.step_shapes``): the runner pads each
        step's tokens, requests and block-table width to the smallest bucket that holds it.
        None, the default: every step has its own shape (graph runners still pad decodes)."""
        return None

    def warm_up(
        self, execute: Callable[[SchedulerOutput], ModelRunnerOutput], shapes: StepShapes,
        max_model_len: int, block_size: int, num_blocks: int,
    ) -> None:
        """Called once at start-up, after the KV cache is allocated, when ``step_shapes`` fixed
        the shapes: a backend that compiles a graph on first use (XLA) runs a dummy step of
        every shape through ``execute`` (the runner's own step) so that serving compiles
        nothing. The dummy steps may write any of the ``num_blocks`` KV blocks (no request owns
        one yet). Default: nothing (plugin API 1.1)."""

    def make_graph_runner(self, model: Any, max_num_seqs: int, max_model_len: int, block_size: int) -> GraphRunner | None:
        """A runner that replays captured graphs for decode batches, or None (eager only)."""
        return None

    # --------------------------------------------------------------------- distributed
    def device_count(self) -> int | None:
        """Devices of this node one rank each can take; None: no limit (ranks are processes on
        the host, as on CPU platforms). The executor refuses a world larger than this on one node."""
        return None

    def make_communicator(self, ranks: list[int], rank_in_group: int, group: Any) -> Communicator:
        """The collectives of one tensor / pipeline group (``group``: a ``torch.distributed``
        process group on ``dist_backend``). Override to use a custom all-reduce or a vendor's
        collective library; the default is plain ``torch.distributed``."""
        from vllm_core.distributed.communicator import TorchCommunicator

        return TorchCommunicator(ranks, rank_in_group, group)

    def describe(self) -> str:
        return f"{self.name} ({self.distribution}, device {self.device_type})"
