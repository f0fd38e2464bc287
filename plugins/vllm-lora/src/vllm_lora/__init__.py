"""vllm-lora: LoRA adapters (PEFT format) for vllm-core, several per step.

``LLM(model, enable_lora=True, max_loras=4, max_lora_rank=64, max_cpu_loras=16)`` and
``generate(..., lora_request=LoRARequest(name, id, path))``, with the core's ``LoRARequest``
(``from vllm_core import LoRARequest``). The plugin registers itself through its entry point
(``vllm_lora.plugin``); nothing here is imported by users.
"""
