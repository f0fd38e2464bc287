"""The server's extra models: names a plugin serves besides the base model (LoRA adapters).

No web framework here: plugins import these names from ``vllm_core.plugins.api``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ServedModel:
    """A name clients may give as ``model`` besides the base model's: a plugin's (a LoRA
    adapter), with the request arguments it stands for."""

    name: str
    root: str
    """Where it comes from (an adapter directory)."""
    parent: str | None = None
    """The served model it builds on (``/v1/models`` shows it)."""
    request_args: dict[str, Any] = field(default_factory=dict)
    """Plugin request arguments a request naming this model runs with (``{"lora_request": ...}``)."""


class ServedModels:
    """The server's extra models by name; plugins add and remove them while it runs."""

    def __init__(self) -> None:
        self._items: dict[str, ServedModel] = {}

    def add(self, model: ServedModel) -> None:
        if model.name in self._items:
            raise ValueError(f"a model named {model.name!r} is already served")
        self._items[model.name] = model

    def remove(self, name: str) -> ServedModel | None:
        return self._items.pop(name, None)

    def get(self, name: str) -> ServedModel | None:
        return self._items.get(name)

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(list(self._items.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._items
