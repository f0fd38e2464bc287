"""From ``lora_request=`` to the request's extension state (front end).

``LoRARequestArgument`` checks the adapter against the base model (config and tensor shapes,
``max_lora_rank``) when a request names it, so a bad adapter is a ``RequestError`` for that
request while the engine keeps serving; the request then carries an ``AdapterRef`` whose
content digest keys its KV blocks: base and adapter requests never share a block, and an
adapter reloaded with other weights never reuses blocks computed with the old ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from vllm_core.plugins.api import BlockKey, FrontendContext, LoRARequest, RequestArgument, RequestExtension
from vllm_lora.adapter import AdapterError, AdapterSpec, ModelShapes, check_adapter
from vllm_lora.config import LoRAConfig


@dataclass(frozen=True)
class AdapterRef(RequestExtension):
    """The adapter a request runs with (checked in the front end)."""

    name: str
    adapter_id: int
    spec: AdapterSpec

    @property
    def digest(self) -> str:
        return self.spec.digest

    def block_hash_extra_keys(self, block_index: int) -> tuple[BlockKey, ...]:
        # the first block's hash chains into every later one
        return (("lora", self.spec.digest),) if block_index == 0 else ()


class LoRARequestArgument(RequestArgument):
    """``lora_request=LoRARequest(name, id, path)`` -> ``AdapterRef``."""

    name: ClassVar[str] = "lora_request"

    def __init__(self, context: FrontendContext) -> None:
        super().__init__(context)
        self.config = context.config.plugin_config(LoRAConfig) or LoRAConfig()
        self._shapes: ModelShapes | None = None

    @property
    def shapes(self) -> ModelShapes:
        if self._shapes is None:
            self._shapes = ModelShapes.from_hf_config(self.context.hf_config)
        return self._shapes

    def to_extensions(self, value: Any) -> Sequence[RequestExtension]:
        if not isinstance(value, LoRARequest):
            raise AdapterError(f"lora_request must be a LoRARequest(name, id, path), got {type(value).__name__}")
        if not self.config.enable_lora:
            raise AdapterError(
                f"lora_request {value.lora_name!r} given but LoRA is off; start the engine with enable_lora=True "
                "(--enable-lora)"
            )
        return [AdapterRef(value.lora_name, value.lora_int_id, self.check(value.lora_path))]

    def check(self, path: str) -> AdapterSpec:
        """The adapter at ``path`` checked against this engine's model and limits."""
        return check_adapter(path, self.shapes, self.config.max_lora_rank)
