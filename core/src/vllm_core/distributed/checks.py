"""Checks of the parallel sizes against the model, run by the driver before any worker starts
(the same rules the parallel layers enforce when they are built)."""

from __future__ import annotations

from typing import Any

from vllm_core.config import EngineConfig
from vllm_core.errors import ModelLoadError


def check_parallel_sizes(config: EngineConfig, hf_config: Any) -> None:
    """Heads divisible by the tensor ranks (KV heads: a divisor or a multiple of them, replicated
    when fewer), the vocabulary-parallel layers pad what does not divide, at least one layer per
    pipeline stage; a ``ModelLoadError`` naming the value and the fix otherwise."""
    from vllm_core.distributed.pipeline import stage_layers
    from vllm_core.model_executor.layers.parallel import divide

    par = config.parallel
    tp = par.tensor_parallel_size
    heads = int(hf_config.num_attention_heads)
    kv_heads = int(getattr(hf_config, "num_key_value_heads", None) or heads)
    divide(heads, tp, "num_attention_heads")
    if tp >= kv_heads and tp % kv_heads:
        raise ModelLoadError(
            f"num_key_value_heads ({kv_heads}) must divide tensor_parallel_size={tp} when there are more "
            "ranks than KV heads; choose a tensor_parallel_size that is a multiple or a divisor of it"
        )
    if tp < kv_heads:
        divide(kv_heads, tp, "num_key_value_heads")
    divide(int(hf_config.intermediate_size), tp, "intermediate_size")
    stage_layers(int(hf_config.num_hidden_layers), 0, par.pipeline_parallel_size)


def load_hf_config(config: EngineConfig) -> Any:
    """The model's Hugging Face config, read by the driver (cheap: no weights)."""
    from vllm_core.model_executor.model_loader.loader import choose_loader, resolve_model_path

    model = config.model
    path = resolve_model_path(model.model) if model.load_format != "dummy" or model.model else model.model
    return choose_loader(path, model.load_format).load_config(path)
