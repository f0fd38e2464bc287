"""The public plugin API, version ``PLUGIN_API_VERSION``: everything a plugin may import.

A plugin imports from here (and ``vllm_core.hookimpl`` / ``vllm_core.PLUGIN_API_VERSION``),
never from the core's other modules, and declares the range it was written for in its plugin
module (``VLLM_CORE_PLUGIN_API = ">=1.0,<2"``). ``docs/plugin-api.md`` lists these names with
the compatibility policy: within a major version boundary dataclasses only gain optional
fields, interfaces only gain methods with defaults, and a renamed or removed name keeps a
deprecated alias (a ``DeprecationWarning``) for one minor version.

Importing this module imports torch: do it from the modules your hooks load, not from the
plugin module itself.
"""

from __future__ import annotations

import warnings
from typing import Any

from vllm_core.attention.backend import AttentionBackend
from vllm_core.attention.metadata import AttentionMetadata
from vllm_core.config import (
    CacheConfig,
    DeviceConfig,
    EngineConfig,
    ModelConfig,
    ParallelConfig,
    PluginConfig,
    SchedulerConfig,
    SpeculativeConfig,
)
from vllm_core.core.sched_output import ModelRunnerOutput, ScheduledRequest, SchedulerOutput
from vllm_core.core.step_constraint import InfoGauge, StepConstraint
from vllm_core.distributed.communicator import Communicator, SingleRankCommunicator, TorchCommunicator
from vllm_core.distributed.parallel_state import ParallelContext
from vllm_core.entrypoints.openai.served_models import ServedModel, ServedModels
from vllm_core.errors import (
    ConfigError,
    EngineError,
    KVCacheTooSmallError,
    ModelLoadError,
    PlatformNotAvailableError,
    PluginError,
    RequestError,
    WorkerError,
)
from vllm_core.extensions.runner import RunnerContext, RunnerExtension, SampledTokens, StepHiddenStates
from vllm_core.extensions.state import BlockKey, CacheSalt, ExtensionState, RequestExtension
from vllm_core.lora_request import LoRARequest
from vllm_core.model_executor.model_loader.gguf_weights import GGUFWeight, iter_gguf_lazy_weights
from vllm_core.model_executor.model_loader.lazy import Weight, materialize
from vllm_core.model_executor.models.interface import ModelContext
from vllm_core.multimodal import (
    MultiModalFeature,
    MultiModalInputError,
    MultiModalInputs,
    MultiModalProcessor,
    PlaceholderRange,
    ProcessedItem,
    hash_item,
)
from vllm_core.platforms.interface import Platform
from vllm_core.platforms.ops import NATIVE_OPS, Ops
from vllm_core.platforms.reference import ReferencePlatform, cpu_memory_info
from vllm_core.plugins.arguments import FrontendContext, RequestArgument
from vllm_core.plugins.compat import PLUGIN_API_VERSION
from vllm_core.plugins.hookspecs import hookimpl
from vllm_core.sample.metadata import SamplingMetadata
from vllm_core.sample.rejection import DraftBatch
from vllm_core.sample.sampler import (
    ReferenceSampler,
    Sampler,
    apply_logits_processors,
    apply_warpers,
    uses_logits_processors,
)
from vllm_core.sample.token_mask import TokenBitmask
from vllm_core.sampling_params import SamplingParams
from vllm_core.spec_decode.proposer import Proposer
from vllm_core.worker.graph_runner import DecodeBuffers, GraphRunner, batch_buckets
from vllm_core.worker.input_batch import ModelInputs
from vllm_core.worker.step_shapes import PAD_SEQ_LEN, PAD_SLOT_ID, StepShape, StepShapes

__all__ = [
    # versioning and hooks
    "PLUGIN_API_VERSION", "hookimpl",
    # platforms and kernels
    "Platform", "ReferencePlatform", "Ops", "NATIVE_OPS", "cpu_memory_info",
    "AttentionBackend", "AttentionMetadata",
    "GraphRunner", "DecodeBuffers", "batch_buckets", "ModelInputs",
    "StepShapes", "StepShape", "PAD_SLOT_ID", "PAD_SEQ_LEN",
    # distributed
    "Communicator", "TorchCommunicator", "SingleRankCommunicator", "ParallelContext",
    # sampling
    "Sampler", "ReferenceSampler", "SamplingMetadata", "SamplingParams", "TokenBitmask", "DraftBatch",
    "apply_logits_processors", "apply_warpers", "uses_logits_processors",
    # the step's data
    "ScheduledRequest", "SchedulerOutput", "ModelRunnerOutput",
    # seams
    "RequestExtension", "ExtensionState", "CacheSalt", "BlockKey",
    "RunnerExtension", "RunnerContext", "SampledTokens", "StepHiddenStates", "Proposer",
    "StepConstraint", "InfoGauge", "RequestArgument", "FrontendContext", "LoRARequest", "ServedModel", "ServedModels",
    # multimodal (1.2)
    "MultiModalProcessor", "ProcessedItem", "MultiModalFeature", "MultiModalInputs", "MultiModalInputError",
    "PlaceholderRange", "hash_item",
    # models built from the core's (1.2)
    "ModelContext", "Weight", "materialize", "language_model_class",
    # configuration
    "EngineConfig", "ModelConfig", "CacheConfig", "SchedulerConfig", "ParallelConfig", "DeviceConfig",
    "SpeculativeConfig", "PluginConfig",
    # errors
    "EngineError", "ConfigError", "PluginError", "PlatformNotAvailableError", "ModelLoadError", "RequestError",
    "KVCacheTooSmallError", "WorkerError",
    # checkpoints (1.2)
    "GGUFWeight", "iter_gguf_lazy_weights",
]

def language_model_class(text_config: Any) -> type[Any]:
    """The registered model class of a config's language model (a vision-language model builds
    its decoder with it: ``language_model_class(hf_config.text_config)(text_config, ctx)``); the
    architecture comes from ``architectures`` or, when the config names none, its
    ``model_type``; an architecture name (``"Qwen2ForCausalLM"``) is looked up as is. (1.2)"""
    from vllm_core.model_executor.model_loader.loader import architectures_of
    from vllm_core.plugins import registry

    models = registry.models()
    if isinstance(text_config, str):  # an architecture name
        return models.get(text_config)  # type: ignore[no-any-return]
    archs = architectures_of(text_config, "text_config")
    arch = next((a for a in archs if a in models), archs[0])
    return models.get(arch)  # type: ignore[no-any-return]


_DEPRECATED: dict[str, tuple[str, str]] = {}
"""Old name -> (new name, the minor version that removes it): kept one minor version."""


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        new, removed_in = _DEPRECATED[name]
        warnings.warn(
            f"vllm_core.plugins.api.{name} is deprecated and goes away in plugin API {removed_in}; "
            f"use {new}", DeprecationWarning, stacklevel=2,
        )
        return globals()[new]
    raise AttributeError(f"module 'vllm_core.plugins.api' has no attribute {name!r}")
