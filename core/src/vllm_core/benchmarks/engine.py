"""Start the engine for a benchmark, time its start-up, and describe where it runs."""

from __future__ import annotations

import logging
import platform as host
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from vllm_core.entrypoints.llm import LLM
from vllm_core.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineStart:
    """A started engine and how long it took."""

    llm: LLM
    start_seconds: float
    """Wall time from ``LLM(...)`` to ready: config, weights, KV cache."""
    enforce_eager: bool | None
    """What the engine was given; None when this engine has no ``enforce_eager`` and it was ignored."""


def start_engine(model: str | None, engine_kwargs: dict[str, Any], enforce_eager: bool = False) -> EngineStart:
    """Build an ``LLM`` from vLLM-style engine arguments.

    ``enforce_eager`` is passed through when the engine knows it; an engine without it rejects the
    name before loading anything, and then it is dropped with a warning rather than failing.
    """
    kwargs = dict(engine_kwargs)
    if enforce_eager:
        kwargs["enforce_eager"] = True
    start = time.perf_counter()
    try:
        llm = LLM(model, use_tqdm_on_load=False, **kwargs)
        applied: bool | None = enforce_eager
    except ConfigError as exc:
        if not enforce_eager or "unknown engine argument 'enforce_eager'" not in str(exc):
            raise
        logger.warning("this engine has no enforce_eager setting; --enforce-eager is ignored")
        kwargs.pop("enforce_eager")
        start = time.perf_counter()
        llm = LLM(model, use_tqdm_on_load=False, **kwargs)
        applied = None
    return EngineStart(llm, time.perf_counter() - start, applied)


def device_name(device_type: str) -> str:
    """A human name of the device: the GPU's name on CUDA, the CPU model elsewhere."""
    if device_type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return host.processor() or host.machine()


@dataclass(frozen=True)
class Environment:
    """Where a benchmark ran and on what model; saved with every result."""

    platform: str
    device_type: str
    device_name: str
    dtype: str
    model: str
    architecture: str
    max_model_len: int
    num_kv_blocks: int
    block_size: int
    model_load_seconds: float
    engine_start_seconds: float
    enforce_eager: bool | None
    torch_version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_environment(started: EngineStart) -> Environment:
    """The platform, device, dtype and model facts of a started engine."""
    engine = started.llm.llm_engine
    loaded = engine.loaded
    archs = list(getattr(loaded.hf_config, "architectures", None) or []) or [type(loaded.model).__name__]
    kv = engine.core.kv_spec
    return Environment(
        platform=engine.platform.name,
        device_type=engine.platform.device_type,
        device_name=device_name(engine.platform.device_type),
        dtype=str(loaded.dtype).removeprefix("torch."),
        model=loaded.model_path,
        architecture=archs[0],
        max_model_len=engine.max_model_len,
        num_kv_blocks=kv.num_blocks,
        block_size=kv.block_size,
        model_load_seconds=round(loaded.load_seconds, 4),
        engine_start_seconds=round(started.start_seconds, 4),
        enforce_eager=started.enforce_eager,
        torch_version=torch.__version__,
    )


def require_max_model_len(llm: LLM, needed: int, what: str) -> None:
    """Fail before timing anything when the longest request cannot fit the model length."""
    limit = llm.llm_engine.max_model_len
    if needed > limit:
        raise ConfigError(
            f"{what} needs {needed} tokens but max_model_len is {limit}; "
            "raise --max-model-len or shorten the input/output lengths"
        )
