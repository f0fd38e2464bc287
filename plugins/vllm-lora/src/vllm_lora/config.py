"""``LoRAConfig``: the plugin's engine arguments (vLLM's names), a section of ``EngineConfig``."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, model_validator

from vllm_core.plugins.api import PluginConfig


class LoRAConfig(PluginConfig):
    """LoRA serving limits: ``LLM(model, enable_lora=True, max_loras=4, max_lora_rank=64)``."""

    name: ClassVar[str] = "lora"

    enable_lora: bool = False
    """Serve LoRA adapters (``lora_request=`` / the server's adapter names)."""
    max_loras: int = Field(default=1, gt=0)
    """Most distinct adapters in one step (device slots); requests of a further adapter wait."""
    max_lora_rank: int = Field(default=16, gt=0, le=512)
    """Largest adapter rank accepted; the device slots are sized for it."""
    max_cpu_loras: int | None = Field(default=None, gt=0)
    """Adapters kept in host memory (LRU; adapters in use are never evicted); default max_loras."""
    max_lora_wait_steps: int = Field(default=256, ge=0)
    """Steps a request of an adapter without a slot waits before a resident adapter is drained
    (admits no new request until its running ones finish) to free a slot for it; 0: no
    bound, vLLM's rule (under steady traffic on max_loras other adapters a request may wait
    until that traffic stops). See ``vllm_lora.admission``."""
    lora_dtype: str = "auto"
    """Dtype of the adapter weights on the device; ``auto``: the model's."""
    lora_modules: list[str] | None = None
    """Server: adapters served from the start, each ``name=path`` or a JSON object
    ``{"name": ..., "path": ..., "base_model_name": ...}`` (repeat --lora-modules)."""

    @property
    def cpu_capacity(self) -> int:
        return self.max_cpu_loras or self.max_loras

    @model_validator(mode="after")
    def _check(self) -> LoRAConfig:
        if self.max_cpu_loras is not None and self.max_cpu_loras < self.max_loras:
            raise ValueError(
                f"max_cpu_loras ({self.max_cpu_loras}) must be at least max_loras ({self.max_loras}): every "
                "adapter on the device is also held in host memory; raise max_cpu_loras or lower max_loras"
            )
        if self.lora_modules and not self.enable_lora:
            raise ValueError("lora_modules given without enable_lora; add --enable-lora")
        if self.lora_dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"lora_dtype {self.lora_dtype!r}: choose auto, float32, bfloat16 or float16")
        return self
