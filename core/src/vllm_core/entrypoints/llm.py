"""``LLM``: offline batched generation with vLLM's Python API."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from tqdm.auto import tqdm

from vllm_core.beam_search import BeamSearchOutput, beam_search
from vllm_core.config import (
    CacheConfig,
    DeviceConfig,
    EngineConfig,
    ModelConfig,
    ParallelConfig,
    SchedulerConfig,
    SpeculativeConfig,
)
from vllm_core.engine.input_processor import PromptType
from vllm_core.engine.llm_engine import LLMEngine
from vllm_core.errors import ConfigError, RequestError
from vllm_core.lora_request import LoRARequest
from vllm_core.multimodal.content_parts import ChatImagePolicy
from vllm_core.multimodal.media import MediaConnector
from vllm_core.outputs import RequestOutput
from vllm_core.sampling_params import BeamSearchParams, RequestOutputKind, SamplingParams
from vllm_core.tokenizers.chat import apply_chat_template, processor_chat_template, validate_messages

logger = logging.getLogger(__name__)

Conversation = list[dict[str, Any]]


def build_engine_config(model: str | None = None, **kwargs: Any) -> EngineConfig:
    """Sort vLLM-style keyword arguments into the config sections, the core's and the plugins'
    (``register_engine_args``); unknown names are an error (naming the plugin that handles
    them when it is not installed)."""
    from vllm_core.plugins import registry
    from vllm_core.plugins.arguments import missing_plugin_hint

    sections: dict[str, tuple[type[BaseModel], dict[str, Any]]] = {
        "model": (ModelConfig, {"model": model or ""}),
        "cache": (CacheConfig, {}),
        "scheduler": (SchedulerConfig, {}),
        "device": (DeviceConfig, {}),
        "parallel": (ParallelConfig, {}),
    }
    plugin_sections: dict[str, tuple[type[BaseModel], dict[str, Any]]] = {
        name: (cls, {}) for name, cls in registry.engine_args().items()
    }
    speculative = kwargs.pop("speculative_config", None)
    for key, value in kwargs.items():
        if value is None:
            continue
        for _, (cls, values) in [*sections.items(), *plugin_sections.items()]:
            if key in cls.model_fields:
                values[key] = value
                break
        else:
            hint = missing_plugin_hint(key)
            if hint:
                raise ConfigError(f"unknown engine argument: {hint}")
            known = sorted(
                [n for cls, _ in [*sections.values(), *plugin_sections.values()] for n in cls.model_fields]
                + ["speculative_config"]
            )
            raise ConfigError(f"unknown engine argument {key!r}; known: {', '.join(known)}")
    try:
        if speculative is not None and not isinstance(speculative, (dict, SpeculativeConfig)):
            raise ConfigError(
                f"speculative_config must be a dict such as {{'method': 'ngram', 'num_speculative_tokens': 4}}, "
                f"got {type(speculative).__name__}"
            )
        built: dict[str, Any] = {name: cls(**values) for name, (cls, values) in sections.items()}
        built["plugins"] = {name: cls(**values) for name, (cls, values) in plugin_sections.items()}
        if speculative is not None:
            built["speculative"] = SpeculativeConfig.model_validate(speculative)
        return EngineConfig.model_validate(built)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(str(exc)) from exc


class LLM:
    """Load a model once, then ``generate`` or ``chat`` over batches of prompts.

    ``model`` is a Hugging Face directory or a ``.gguf`` file; None runs the embedded default
    (SmolLM2-135M-Instruct). Keyword arguments take vLLM's names: ``dtype``, ``max_model_len``,
    ``max_num_seqs``, ``max_num_batched_tokens``, ``enable_prefix_caching``, ``block_size``,
    ``seed``, ``load_format``, ``tokenizer``, ``device``, ``kv_cache_memory_bytes``,
    ``num_gpu_blocks_override``, ...

    ``allowed_local_media_path``: the directory ``file://`` image URLs in ``chat`` messages may
    read under (None: ``file://`` URLs are refused); ``allowed_media_domains``: the only hosts
    ``http(s)://`` image URLs may name (None: any).
    """

    def __init__(self, model: str | None = None, *, use_tqdm_on_load: bool = True,
                 allowed_local_media_path: str | None = None, allowed_media_domains: list[str] | None = None,
                 **kwargs: Any) -> None:
        try:
            connector = MediaConnector.create(allowed_local_media_path, allowed_media_domains=allowed_media_domains)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.engine_config = build_engine_config(model, **kwargs)
        self.llm_engine = LLMEngine(self.engine_config, use_tqdm=use_tqdm_on_load)
        self.chat_images = ChatImagePolicy.for_engine(connector, self.llm_engine.input_processor.multimodal,
                                                      model or "the default model")
        self.chat_template = processor_chat_template(model)
        """The model directory's processor template (``chat_template.json``), else None: the tokenizer's."""

    def get_tokenizer(self) -> Any:
        return self.llm_engine.get_tokenizer()

    def generate(
        self,
        prompts: PromptType | Sequence[PromptType],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
        lora_request: LoRARequest | Sequence[LoRARequest | None] | None = None,
    ) -> list[RequestOutput]:
        """Generate for every prompt; results come back in input order.

        ``prompts``: a string, a list of strings, or ``{"prompt_token_ids": [...]}`` dicts.
        ``sampling_params``: one for all prompts or one per prompt (default ``SamplingParams()``).
        ``lora_request``: the adapter of every prompt, or a list with one per prompt (None: the
        base model); needs the ``vllm-lora`` plugin and ``enable_lora=True``.
        """
        prompt_list = self._as_list(prompts)
        params_list = self._params_for(prompt_list, sampling_params)
        args_list = self._request_args_for(prompt_list, lora_request=lora_request)
        return self._run(prompt_list, params_list, use_tqdm, args_list)

    def beam_search(
        self,
        prompts: PromptType | Sequence[PromptType],
        params: BeamSearchParams,
        use_tqdm: bool = False,
        lora_request: LoRARequest | Sequence[LoRARequest | None] | None = None,
    ) -> list[BeamSearchOutput]:
        """The ``params.beam_width`` best beams of every prompt, best first (vLLM's API; see
        ``vllm_core.beam_search``). Prefix caching makes the beams share their KV blocks.
        ``lora_request``: as in ``generate`` (every beam of a prompt runs with its adapter)."""
        if not isinstance(params, BeamSearchParams):
            raise RequestError(f"params must be BeamSearchParams, got {type(params).__name__}")
        prompt_list = self._as_list(prompts)
        loras = [a.get("lora_request") for a in self._request_args_for(prompt_list, lora_request=lora_request)]
        return beam_search(self, prompt_list, params, loras)

    def chat(
        self,
        messages: Conversation | Sequence[Conversation],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        use_tqdm: bool = True,
        chat_template: str | None = None,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
        lora_request: LoRARequest | Sequence[LoRARequest | None] | None = None,
    ) -> list[RequestOutput]:
        """Apply the chat template to one conversation or a list of them, then generate
        (``lora_request`` as in ``generate``).

        A message's ``content`` may be a list of OpenAI content parts: ``text``, ``image_url``
        (``data:``, ``file://`` under ``allowed_local_media_path``, ``http(s)://``) and
        ``image_pil``; the images go to the engine as the prompt's ``multi_modal_data``."""
        if not isinstance(messages, list) or not messages:
            raise RequestError("messages must be a non-empty list of messages or of conversations")
        conversations = [messages] if isinstance(messages[0], dict) else list(messages)
        tok = self.get_tokenizer()
        prompts: list[PromptType] = []
        chat_template = chat_template or self.chat_template
        for conv in conversations:
            parsed = self.chat_images.parse(validate_messages(conv))
            messages = self.chat_images.template_messages(parsed, chat_template or getattr(tok, "chat_template", None))
            text = apply_chat_template(tok, messages, chat_template, add_generation_prompt, tools)
            # The template already holds the special tokens (BOS): do not add them again.
            prompt: dict[str, Any] = {"prompt": text, "prompt_token_ids": tok.encode(text, add_special_tokens=False)}
            if parsed.images:
                prompt["multi_modal_data"] = {"image": self.chat_images.load(parsed)}
            prompts.append(prompt)
        return self.generate(prompts, sampling_params, use_tqdm, lora_request)

    @staticmethod
    def _request_args_for(prompts: list[PromptType], **args: Any) -> list[dict[str, Any]]:
        """Per prompt, the plugin keyword arguments: each value is one for all prompts or a
        list / tuple with one per prompt."""
        out: list[dict[str, Any]] = [{} for _ in prompts]
        for name, value in args.items():
            if value is None:
                continue
            values = list(value) if isinstance(value, (list, tuple)) else [value] * len(prompts)
            if len(values) != len(prompts):
                raise RequestError(f"got {len(values)} values of {name} for {len(prompts)} prompts")
            for per_prompt, v in zip(out, values):
                per_prompt[name] = v
        return out

    @staticmethod
    def _as_list(prompts: Any) -> list[PromptType]:
        if isinstance(prompts, (str, dict)):
            return [prompts]
        if isinstance(prompts, (list, tuple)):
            if prompts and all(isinstance(t, int) and not isinstance(t, bool) for t in prompts):
                raise RequestError("a list of ints is ambiguous; pass {'prompt_token_ids': [...]}")
            return list(prompts)
        raise RequestError(f"prompts must be a string, a dict or a list of them, got {type(prompts).__name__}")

    @staticmethod
    def _params_for(prompts: list[PromptType], params: Any) -> list[SamplingParams]:
        """One ``SamplingParams`` per prompt, each asking for its final output only (as vLLM's
        ``LLM`` does: nothing streams here, and a DELTA result would hold only the last piece)."""
        if params is None:
            params = SamplingParams()
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        params = list(params)
        if len(params) != len(prompts):
            raise RequestError(f"got {len(params)} SamplingParams for {len(prompts)} prompts")
        final: dict[int, SamplingParams] = {}
        for p in params:
            if isinstance(p, SamplingParams) and id(p) not in final:
                final[id(p)] = p if p.output_kind is RequestOutputKind.FINAL_ONLY else p.clone(
                    output_kind=RequestOutputKind.FINAL_ONLY)
        return [final.get(id(p), p) for p in params]

    def _run(
        self, prompts: list[PromptType], params: list[SamplingParams], use_tqdm: bool,
        request_args: list[dict[str, Any]] | None = None,
    ) -> list[RequestOutput]:
        engine = self.llm_engine
        ids = [engine.next_request_id() for _ in prompts]
        args_list = request_args or [{} for _ in prompts]
        added: list[str] = []
        try:
            for rid, prompt, p, args in zip(ids, prompts, params, args_list):
                engine.add_request(rid, prompt, p, args)
                added.append(rid)
        except Exception:
            engine.abort_request(added)
            raise
        results: dict[str, RequestOutput] = {}
        bar = tqdm(total=len(ids), desc="Processed prompts", unit="req", disable=not use_tqdm)
        try:
            while len(results) < len(ids):
                for out in engine.step():
                    if out.finished:
                        results[out.request_id] = out
                        bar.update(1)
        except BaseException:
            engine.abort_request([rid for rid in ids if rid not in results])
            raise
        finally:
            bar.close()
        return [results[rid] for rid in ids]
