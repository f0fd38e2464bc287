"""Hugging Face model directories: ``config.json``, tokenizer files, (sharded) safetensors."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from typing import Any, ClassVar

import torch

from vllm_core.errors import ModelLoadError
from vllm_core.model_executor.model_loader.base import ModelLoader
from vllm_core.model_executor.model_loader.lazy import SafetensorsSlice, Weight


def load_hf_config(model: str) -> Any:
    from transformers import AutoConfig

    if not os.path.isdir(model):
        raise ModelLoadError(f"model path {model!r} is not a directory with a config.json")
    try:
        return AutoConfig.from_pretrained(model, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - surfaces transformers' reason
        raise ModelLoadError(f"cannot read the config of {model!r}: {exc}") from exc


def load_hf_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(
            f"cannot load a tokenizer from {path!r}: {exc}; pass tokenizer=<dir> "
            "or skip_tokenizer_init=True with token-id prompts"
        ) from exc


class SafetensorsLoader(ModelLoader):
    """A directory with ``config.json`` and ``*.safetensors`` (sharded or not)."""

    name: ClassVar[str] = "safetensors"
    auto_priority: ClassVar[int] = 10

    def __init__(self) -> None:
        self.bytes_read = [0]
        """Bytes ``iter_lazy_weights`` read from the files (a rank of a tensor-parallel group
        reads its shards and the replicated tensors, not the whole checkpoint)."""

    @classmethod
    def detect(cls, model: str) -> bool:
        return os.path.isdir(model) and bool(glob.glob(os.path.join(model, "*.safetensors")))

    def load_config(self, model: str) -> Any:
        return load_hf_config(model)

    def load_tokenizer(self, model: str, tokenizer: str | None) -> Any:
        return load_hf_tokenizer(tokenizer or model)

    def _files(self, model: str) -> list[str]:
        files = sorted(glob.glob(os.path.join(model, "*.safetensors")))
        if not files:
            raise ModelLoadError(f"no *.safetensors files in {model!r}")
        return files

    def num_weights(self, model: str) -> int | None:
        from safetensors import safe_open

        total = 0
        for f in self._files(model):
            with safe_open(f, framework="pt") as st:
                total += len(list(st.keys()))
        return total

    def iter_weights(self, model: str, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
        from safetensors import safe_open

        for f in self._files(model):
            with safe_open(f, framework="pt") as st:
                for name in st.keys():
                    yield name, st.get_tensor(name).to(dtype)

    def iter_lazy_weights(self, model: str, dtype: torch.dtype) -> Iterator[tuple[str, Weight]]:
        from safetensors import safe_open

        for f in self._files(model):
            with safe_open(f, framework="pt") as st:
                for name in st.keys():
                    yield name, SafetensorsSlice(st.get_slice(name), dtype, self.bytes_read)
