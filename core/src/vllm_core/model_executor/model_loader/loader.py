"""From a ``ModelConfig`` to a model on the device with its weights, config and tokenizer."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from vllm_core.config import ModelConfig
from vllm_core.distributed.parallel_state import SINGLE, ParallelContext
from vllm_core.errors import ConfigError, ModelLoadError
from vllm_core.model_executor.model_loader.base import ModelLoader
from vllm_core.model_executor.model_loader.default_model import default_model_path
from vllm_core.model_executor.models.interface import ModelContext
from vllm_core.platforms.interface import Platform

logger = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32, "float": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "half": torch.float16, "fp16": torch.float16,
}


@dataclass
class LoadedModel:
    """The result of loading: what was found at run time, kept out of the config."""

    model: nn.Module
    hf_config: Any
    tokenizer: Any | None
    dtype: torch.dtype
    max_model_len: int
    model_path: str
    load_seconds: float

    @property
    def text_config(self) -> Any:
        """The language model's config (``hf_config`` itself, or a vision-language model's
        ``text_config``): vocabulary, heads, context length."""
        return text_config_of(self.hf_config)


def text_config_of(hf_config: Any) -> Any:
    """The language model's part of a config: ``get_text_config()`` of a composite config
    (LLaVA, Qwen2-VL: vocab, heads and positions live in ``text_config``), else the config."""
    get = getattr(hf_config, "get_text_config", None)
    return get() if callable(get) else hf_config


def resolve_model_path(model: str | None) -> str:
    """``None`` or empty means the embedded default model."""
    if not model:
        return default_model_path()
    path = os.path.expanduser(model)
    if not os.path.exists(path):
        raise ModelLoadError(
            f"model {model!r} not found: give a Hugging Face model directory or a .gguf file "
            "(nothing is downloaded), or leave it out for the default model"
        )
    return path


def choose_loader(model: str, load_format: str) -> ModelLoader:
    from vllm_core.plugins import registry

    loaders = registry.model_loaders()
    if load_format != "auto":
        return loaders.get(load_format)()
    ordered = sorted(
        (cls for _, cls in loaders.items() if cls.auto_priority >= 0),
        key=lambda c: -c.auto_priority,
    )
    for cls in ordered:
        if cls.detect(model):
            return cls()
    raise ModelLoadError(
        f"cannot tell how to load {model!r}: expected a directory with config.json and "
        f"*.safetensors, or a .gguf file; load formats: {', '.join(loaders.names())}"
    )


def resolve_dtype(dtype: str, hf_config: Any, platform: Platform) -> torch.dtype:
    if dtype == "auto":
        cfg = getattr(hf_config, "dtype", None) or getattr(hf_config, "torch_dtype", None)
        if isinstance(cfg, str):
            cfg = _DTYPES.get(cfg)
        resolved = cfg if isinstance(cfg, torch.dtype) else torch.float32
        if resolved not in platform.supported_dtypes():
            resolved = torch.float32
        return resolved
    resolved = _DTYPES[dtype]
    if resolved not in platform.supported_dtypes():
        raise ConfigError(
            f"dtype {dtype!r} is not supported by platform {platform.name!r}; supported: "
            f"{', '.join(str(d).removeprefix('torch.') for d in platform.supported_dtypes())}"
        )
    return resolved


def resolve_max_model_len(requested: int | None, hf_config: Any) -> int:
    limit = getattr(hf_config, "max_position_embeddings", None) or 2048
    window = getattr(hf_config, "sliding_window", None)
    if window and getattr(hf_config, "use_sliding_window", True):
        # Sliding-window attention is not implemented: stay inside the window, where it is exact.
        limit = min(limit, window)
    if requested is None:
        return int(limit)
    if requested > limit:
        raise ConfigError(
            f"max_model_len={requested} exceeds the model's limit {limit} "
            "(max_position_embeddings / sliding_window); use a value <= that"
        )
    return requested


def architectures_of(hf_config: Any, path: str) -> list[str]:
    """The config's ``architectures``; GGUF configs have none, so fall back to the causal-LM
    class transformers maps the ``model_type`` to."""
    archs = list(getattr(hf_config, "architectures", None) or [])
    if archs:
        return archs
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    arch = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(getattr(hf_config, "model_type", ""))
    if arch is None:
        raise ModelLoadError(f"{path!r}: the config names no architecture and no known model_type")
    return [arch]


def load_model(
    config: ModelConfig, platform: Platform, use_tqdm: bool = True, parallel: ParallelContext = SINGLE,
) -> LoadedModel:
    """Read config and tokenizer, build the architecture on the platform, load weights.

    ``parallel``: this rank's tensor / pipeline groups; the model builds its shard and stage,
    and reads only those weights."""
    from vllm_core.plugins import registry

    start = time.perf_counter()
    path = resolve_model_path(config.model) if config.load_format != "dummy" or config.model else config.model
    loader = choose_loader(path, config.load_format)
    hf_config = loader.load_config(path)
    archs = architectures_of(hf_config, path)
    models = registry.models()
    arch = next((a for a in archs if a in models), None)
    if arch is None:
        raise ModelLoadError(
            f"model architecture {archs[0]!r} is not supported; supported: {', '.join(models.names())}"
        )
    cls = models.get(arch)
    dtype = resolve_dtype(config.dtype, hf_config, platform)
    text_config = text_config_of(hf_config)
    max_model_len = resolve_max_model_len(config.max_model_len, text_config)
    tokenizer = None if config.skip_tokenizer_init else loader.load_tokenizer(path, config.tokenizer)

    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    backend = platform.select_attention_backend(head_dim, dtype)
    ctx = ModelContext(
        ops=platform.ops,
        attention_backend=backend,
        max_positions=max(max_model_len, getattr(text_config, "max_position_embeddings", 0) or 0),
        parallel=parallel,
    )
    device = platform.device()
    old_dtype = torch.get_default_dtype()
    torch.manual_seed(config.seed)
    try:
        torch.set_default_dtype(dtype)
        with torch.device(device):
            model = cls(hf_config, ctx)
    finally:
        torch.set_default_dtype(old_dtype)
    total = loader.num_weights(path) or sum(1 for _ in model.parameters())
    with tqdm(total=total, desc="Loading weights", unit="tensor", disable=not use_tqdm, leave=False) as bar:
        with torch.no_grad():
            loader.load_weights(model, path, dtype, bar)
    model.eval()
    seconds = time.perf_counter() - start
    logger.info(
        "loaded %s (%s, %s, attention %s) in %.1f s", path, arch, str(dtype).removeprefix("torch."),
        backend.name, seconds,
    )
    return LoadedModel(model, hf_config, tokenizer, dtype, max_model_len, path, seconds)
