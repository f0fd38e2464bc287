"""``LoRARequest``: which adapter a request runs with (vLLM's class, as a plain dataclass).

It lives in the core's public API, not in the ``vllm-lora`` plugin, because it is part of the
*user's* vocabulary: ``LLM.generate(..., lora_request=LoRARequest(...))`` must type-check and
pickle without the plugin imported, the OpenAI server's model table names adapters by it, and
code written for vLLM (``from vllm.lora.request import LoRARequest``) ports by changing one
import (``from vllm_core import LoRARequest``). It holds no behaviour: the plugin that handles
``lora_request`` (``vllm-lora``) reads, validates and loads the adapter. Without that plugin a
request that names an adapter is refused with the install command.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoRARequest:
    """A LoRA adapter in PEFT's format: a directory with ``adapter_config.json`` and
    ``adapter_model.safetensors``."""

    lora_name: str
    """The name clients use (the OpenAI ``model`` field on the server)."""
    lora_int_id: int
    """A positive id, unique per adapter within an engine (vLLM's ``lora_int_id``)."""
    lora_path: str
    """The adapter directory."""
    base_model_name: str | None = None
    """The model the adapter was trained on (listed as ``parent`` by ``/v1/models``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.lora_name, str) or not self.lora_name:
            raise ValueError(f"lora_name must be a non-empty string, got {self.lora_name!r}")
        if isinstance(self.lora_int_id, bool) or not isinstance(self.lora_int_id, int) or self.lora_int_id < 1:
            raise ValueError(f"lora_int_id must be an integer >= 1, got {self.lora_int_id!r}")
        if not isinstance(self.lora_path, str) or not self.lora_path:
            raise ValueError(f"lora_path must be a non-empty string (the adapter directory), got {self.lora_path!r}")

    @property
    def name(self) -> str:
        return self.lora_name

    @property
    def adapter_id(self) -> int:
        return self.lora_int_id

    @property
    def path(self) -> str:
        return self.lora_path
