"""Model architectures shipped with the core (registered through ``register_models``)."""

from vllm_core.model_executor.models.interface import ModelContext

BUILTIN_MODELS = {
    "LlamaForCausalLM": "vllm_core.model_executor.models.llama:LlamaForCausalLM",
    "MistralForCausalLM": "vllm_core.model_executor.models.llama:MistralForCausalLM",
    "Qwen2ForCausalLM": "vllm_core.model_executor.models.llama:Qwen2ForCausalLM",
    "Qwen3ForCausalLM": "vllm_core.model_executor.models.llama:Qwen3ForCausalLM",
}

__all__ = ["BUILTIN_MODELS", "ModelContext"]
