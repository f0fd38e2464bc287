"""Random weights for a config (benchmarks): ``load_format="dummy"``, nothing read from disk."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from vllm_core.model_executor.model_loader.base import ModelLoader
from vllm_core.model_executor.model_loader.hf import load_hf_config, load_hf_tokenizer


class DummyLoader(ModelLoader):
    """``model`` is a directory holding at least ``config.json``; a tokenizer there is used
    when present. Parameters are uniform in [-1e-3, 1e-3] (norm weights 1), as vLLM does."""

    name: ClassVar[str] = "dummy"
    auto_priority: ClassVar[int] = -1

    def load_config(self, model: str) -> Any:
        return load_hf_config(model)

    def load_tokenizer(self, model: str, tokenizer: str | None) -> Any:
        path = tokenizer or model
        has_files = any(
            os.path.exists(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer_config.json")
        )
        return load_hf_tokenizer(path) if has_files else None

    def iter_weights(self, model: str, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(())

    def load_weights(self, model_obj: nn.Module, model: str, dtype: torch.dtype, progress: Any) -> None:
        for name, param in model_obj.named_parameters():
            if name.endswith("norm.weight"):
                param.data.fill_(1.0)
            else:
                param.data.uniform_(-1e-3, 1e-3)
            progress.update(1)
