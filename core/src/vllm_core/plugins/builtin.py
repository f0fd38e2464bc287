"""The core's own features, registered through the same hooks as any plugin."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from vllm_core.plugins.hookspecs import hookimpl


@hookimpl
def register_platforms(register: Callable[[type[Any]], None]) -> None:
    from vllm_core.platforms.reference import ReferencePlatform

    register(ReferencePlatform)


@hookimpl
def register_attention_backends(register: Callable[[type[Any]], None]) -> None:
    from vllm_core.attention.backends.reference import ReferenceAttentionBackend

    register(ReferenceAttentionBackend)


@hookimpl
def register_samplers(register: Callable[[type[Any]], None]) -> None:
    from vllm_core.sample.sampler import ReferenceSampler

    register(ReferenceSampler)


@hookimpl
def register_model_loaders(register: Callable[[type[Any]], None]) -> None:
    from vllm_core.model_executor.model_loader.dummy import DummyLoader
    from vllm_core.model_executor.model_loader.gguf_loader import GGUFLoader
    from vllm_core.model_executor.model_loader.hf import SafetensorsLoader

    register(SafetensorsLoader)
    register(GGUFLoader)
    register(DummyLoader)


@hookimpl
def register_models(register: Callable[[str, type[Any]], None]) -> None:
    from vllm_core.model_executor.models import BUILTIN_MODELS

    for arch, target in BUILTIN_MODELS.items():
        module, attr = target.split(":")
        register(arch, getattr(importlib.import_module(module), attr))


@hookimpl
def register_tool_parsers(register: Callable[[str, type[Any]], None]) -> None:
    from vllm_core.tool_parsers.hermes import HermesToolParser
    from vllm_core.tool_parsers.llama3_json import Llama3JsonToolParser
    from vllm_core.tool_parsers.mistral import MistralToolParser
    from vllm_core.tool_parsers.pythonic import PythonicToolParser

    register("hermes", HermesToolParser)
    register("llama3_json", Llama3JsonToolParser)
    register("mistral", MistralToolParser)
    register("pythonic", PythonicToolParser)


@hookimpl
def register_reasoning_parsers(register: Callable[[str, type[Any]], None]) -> None:
    from vllm_core.reasoning.deepseek_r1 import DeepSeekR1ReasoningParser

    register("deepseek_r1", DeepSeekR1ReasoningParser)


@hookimpl
def register_runner_extensions(register: Callable[[type[Any]], None]) -> None:
    from vllm_core.sample.structured import StructuredOutputs
    from vllm_core.spec_decode.extension import SpeculativeDecoding

    register(StructuredOutputs)
    register(SpeculativeDecoding)


@hookimpl
def register_proposers(register: Callable[[type[Any]], None]) -> None:
    from vllm_core.spec_decode.draft_model import DraftModelProposer
    from vllm_core.spec_decode.eagle import Eagle3Proposer, EagleProposer
    from vllm_core.spec_decode.ngram import NgramProposer

    register(NgramProposer)
    register(DraftModelProposer)
    register(EagleProposer)
    register(Eagle3Proposer)
