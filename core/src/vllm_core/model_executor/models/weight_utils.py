"""Copying one checkpoint tensor into a model's parameter: the step every ``load_weights`` shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from vllm_core.errors import ModelLoadError
from vllm_core.model_executor.model_loader.lazy import materialize


def stacked_target(name: str, stacked: Sequence[tuple[str, str, int]]) -> tuple[str, int | None]:
    """The parameter a checkpoint name loads into and its shard: ``q_proj`` -> (``qkv_proj``, 0)
    for ``stacked`` rows ``(fused, part, index)``; ``(name, None)`` when no row matches."""
    for fused, part, idx in stacked:
        if part in name:
            return name.replace(part, fused), idx
    return name, None


def load_parameter(
    modules: dict[str, nn.Module], params: dict[str, nn.Parameter], target: str, name: str,
    tensor: Any, shard: int | None,
) -> None:
    """Copy ``tensor`` (checkpoint name ``name``) into parameter ``target``: through its module's
    ``weight_loader`` (sharded and fused layers) or as a whole tensor of the same shape."""
    module_name, param_name = target.rsplit(".", 1)
    loader = getattr(modules[module_name], "weight_loader", None)
    if loader is not None:
        loader(param_name, tensor, shard)
        return
    data, full = params[target].data, materialize(tensor)
    if data.shape != full.shape:
        raise ModelLoadError(f"weight {name!r} has shape {tuple(full.shape)}, expected {tuple(data.shape)}")
    data.copy_(full)
