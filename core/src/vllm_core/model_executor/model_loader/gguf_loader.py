"""GGUF files: weights dequantized by the ``gguf`` package, tokenizer and chat template from
the file's metadata (read through ``transformers``' GGUF support).

Reading the tokenizer out of GGUF metadata takes seconds, so the converted config and
tokenizer are saved once under ``$VLLM_CORE_CACHE`` (default ``~/.cache/vllm_core``), keyed by
the file's path, size and modification time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any, ClassVar

import torch

from vllm_core.errors import ModelLoadError
from vllm_core.model_executor.model_loader.base import ModelLoader
from vllm_core.model_executor.model_loader.lazy import Weight


def _require_gguf() -> None:
    try:
        import gguf  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError("reading .gguf files needs the gguf package: pip install gguf") from exc


def _cache_dir(path: str) -> str:
    st = os.stat(path)
    key = hashlib.sha256(f"{os.path.abspath(path)}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    root = os.environ.get("VLLM_CORE_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "vllm_core"))
    return os.path.join(root, "gguf", key)


class GGUFLoader(ModelLoader):
    """A single ``.gguf`` file (llama, mistral, qwen2, qwen3 architectures)."""

    name: ClassVar[str] = "gguf"
    auto_priority: ClassVar[int] = 20

    def __init__(self) -> None:
        self.bytes_read = [0]
        """File bytes ``iter_lazy_weights`` dequantized (a rank reads its stage's tensors and, of
        the column-parallel ones, its rows)."""

    @classmethod
    def detect(cls, model: str) -> bool:
        return model.endswith(".gguf") and os.path.isfile(model)

    def _check(self, model: str) -> None:
        if not os.path.isfile(model):
            raise ModelLoadError(f"GGUF file {model!r} does not exist")
        _require_gguf()

    def load_config(self, model: str) -> Any:
        from transformers import AutoConfig

        self._check(model)
        cached = os.path.join(_cache_dir(model), "config")
        if os.path.exists(os.path.join(cached, "config.json")):
            return AutoConfig.from_pretrained(cached, local_files_only=True)
        try:
            config = AutoConfig.from_pretrained(
                os.path.dirname(os.path.abspath(model)), gguf_file=os.path.basename(model)
            )
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"cannot read the config from GGUF {model!r}: {exc}") from exc
        self._save(config, cached)
        return config

    def load_tokenizer(self, model: str, tokenizer: str | None) -> Any:
        from transformers import AutoTokenizer

        if tokenizer is not None:
            from vllm_core.model_executor.model_loader.hf import load_hf_tokenizer

            return load_hf_tokenizer(tokenizer)
        self._check(model)
        cached = os.path.join(_cache_dir(model), "tokenizer")
        if os.path.exists(os.path.join(cached, "tokenizer_config.json")):
            return AutoTokenizer.from_pretrained(cached, local_files_only=True)
        try:
            tok = AutoTokenizer.from_pretrained(
                os.path.dirname(os.path.abspath(model)), gguf_file=os.path.basename(model)
            )
        except Exception as exc:  # noqa: BLE001
            raise ModelLoadError(f"cannot read the tokenizer from GGUF {model!r}: {exc}") from exc
        self._save(tok, cached)
        return tok

    @staticmethod
    def _save(obj: Any, path: str) -> None:
        try:
            os.makedirs(path, exist_ok=True)
            obj.save_pretrained(path)
        except OSError:
            pass  # a read-only home only costs speed

    def num_weights(self, model: str) -> int | None:
        from vllm_core.model_executor.model_loader.gguf_weights import num_gguf_tensors

        return num_gguf_tensors(model)

    def iter_lazy_weights(self, model: str, dtype: torch.dtype) -> Iterator[tuple[str, Weight]]:
        from vllm_core.model_executor.model_loader.gguf_weights import iter_gguf_lazy_weights

        self._check(model)
        try:
            yield from iter_gguf_lazy_weights(model, dtype, self.bytes_read)
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc

    def iter_weights(self, model: str, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
        from vllm_core.model_executor.model_loader.gguf_weights import iter_gguf_weights

        self._check(model)
        try:
            yield from iter_gguf_weights(model, dtype)
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
