"""The ``ModelLoader`` interface: config, tokenizer and weights from one kind of source."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from vllm_core.model_executor.model_loader.lazy import Weight


class ModelLoader(ABC):
    """Reads a model source. Registered by ``name`` (the ``load_format`` value)."""

    name: ClassVar[str]
    auto_priority: ClassVar[int] = 0
    """Order in which ``load_format=auto`` asks ``detect``; higher first, negative never."""

    @classmethod
    def detect(cls, model: str) -> bool:
        """True when ``load_format=auto`` should use this loader for ``model``."""
        return False

    @abstractmethod
    def load_config(self, model: str) -> Any:
        """The Hugging Face ``PretrainedConfig`` of the model."""

    @abstractmethod
    def load_tokenizer(self, model: str, tokenizer: str | None) -> Any:
        """A ``transformers`` tokenizer (``tokenizer`` overrides where it comes from)."""

    @abstractmethod
    def iter_weights(self, model: str, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
        """Hugging Face-named tensors."""

    def iter_lazy_weights(self, model: str, dtype: torch.dtype) -> Iterator[tuple[str, Weight]]:
        """Like ``iter_weights``, but a loader may yield ``LazyWeight`` objects, so a
        tensor-parallel rank reads only its shard of each tensor. Default: ``iter_weights``."""
        yield from self.iter_weights(model, dtype)

    def num_weights(self, model: str) -> int | None:
        """How many tensors ``iter_weights`` yields (progress bar), if cheap to know."""
        return None

    def load_weights(self, model_obj: nn.Module, model: str, dtype: torch.dtype, progress: Any) -> None:
        """Fill ``model_obj``'s parameters; checks that none was left empty."""
        from vllm_core.errors import ModelLoadError

        def tick(it: Iterator[tuple[str, Weight]]) -> Iterator[tuple[str, Weight]]:
            for item in it:
                progress.update(1)
                yield item

        loaded = model_obj.load_weights(tick(self.iter_lazy_weights(model, dtype)))  # type: ignore[operator]
        missing = model_obj.expected_weights() - loaded  # type: ignore[operator]
        if missing:
            raise ModelLoadError(
                f"{model}: {len(missing)} weights missing from the checkpoint, e.g. {sorted(missing)[:3]}"
            )
