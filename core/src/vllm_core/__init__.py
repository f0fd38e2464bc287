"""vllm-core: a vLLM-class LLM inference engine with hardware backends as plugins.

    from vllm_core import LLM, SamplingParams
    llm = LLM()  # the embedded SmolLM2-135M-Instruct
    print(llm.generate("Hello", SamplingParams(max_tokens=16))[0].outputs[0].text)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from vllm_core.lora_request import LoRARequest
from vllm_core.outputs import CompletionOutput, Logprob, RequestOutput
from vllm_core.plugins.compat import PLUGIN_API_VERSION
from vllm_core.plugins.hookspecs import hookimpl
from vllm_core.sampling_params import BeamSearchParams, RequestOutputKind, SamplingParams, StructuredOutputsParams

if TYPE_CHECKING:
    from vllm_core.entrypoints.llm import LLM


def __getattr__(name: str) -> Any:
    # LLM pulls in torch and transformers: import it only when asked for.
    if name == "LLM":
        from vllm_core.entrypoints.llm import LLM

        return LLM
    raise AttributeError(f"module 'vllm_core' has no attribute {name!r}")


__all__ = [
    "LLM", "PLUGIN_API_VERSION", "BeamSearchParams", "CompletionOutput", "Logprob", "LoRARequest", "RequestOutput",
    "RequestOutputKind",
    "SamplingParams", "StructuredOutputsParams", "__version__", "hookimpl",
]
