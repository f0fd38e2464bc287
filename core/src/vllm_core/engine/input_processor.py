"""Prompts in, validated ``EngineCoreRequest`` out. Bad input raises ``RequestError`` before
anything reaches the engine core, so other requests are never affected."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Union

from vllm_core.engine.core_types import EngineCoreRequest
from vllm_core.errors import RequestError
from vllm_core.extensions.state import CacheSalt, ExtensionState, RequestExtension
from vllm_core.multimodal.processing import MultiModalPromptProcessor
from vllm_core.plugins.arguments import RequestArguments
from vllm_core.sample.admission import DEFAULT_MAX_LOGPROBS, check_params_for_model, truncate_prompt
from vllm_core.sampling_params import SamplingParams

PromptType = Union[str, dict[str, Any], list[int]]


class InputProcessor:
    """Tokenizes and validates prompts (and applies the model's multimodal processor) in the
    front end, before anything reaches the engine core."""

    def __init__(
        self,
        tokenizer: Any,
        max_model_len: int,
        vocab_size: int,
        eos_token_id: int | None,
        max_logprobs: int = DEFAULT_MAX_LOGPROBS,
        request_arguments: RequestArguments | None = None,
        multimodal: MultiModalPromptProcessor | None = None,
    ) -> None:
        """``request_arguments``: the plugins' per-request keyword arguments (``lora_request``);
        ``multimodal``: the model's handling of ``multi_modal_data`` (None: prompts with it are
        refused as for a text-only model)."""
        self.request_arguments = request_arguments or RequestArguments({})
        self.multimodal = multimodal or MultiModalPromptProcessor(None, {}, "this model")
        self.tokenizer = tokenizer
        self.max_logprobs = max_logprobs
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self.eos_token_id = eos_token_id

    def tokenize(self, prompt: PromptType) -> tuple[str | None, list[int]]:
        """(prompt text or None, prompt token ids) for a str, ``{"prompt": ...}`` or
        ``{"prompt_token_ids": [...]}``."""
        if isinstance(prompt, dict):
            if "prompt_token_ids" in prompt:
                ids = prompt["prompt_token_ids"]
                if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
                    raise RequestError("prompt_token_ids must be a list of integers")
                return prompt.get("prompt"), list(ids)
            if "prompt" in prompt:
                prompt = prompt["prompt"]
            else:
                raise RequestError(
                    f"a prompt dict needs 'prompt' or 'prompt_token_ids'; got keys {sorted(prompt)}"
                )
        if not isinstance(prompt, str):
            raise RequestError(
                f"prompt must be a string or a dict with 'prompt' / 'prompt_token_ids', got {type(prompt).__name__}"
            )
        if self.tokenizer is None:
            raise RequestError("text prompts need a tokenizer; pass {'prompt_token_ids': [...]}")
        return prompt, self.tokenizer.encode(prompt, add_special_tokens=True) if prompt else []

    def process(
        self, request_id: str, prompt: PromptType, params: SamplingParams,
        request_args: Mapping[str, Any] | None = None,
    ) -> tuple[str | None, EngineCoreRequest]:
        """``request_args``: plugin keyword arguments of this request (``{"lora_request": ...}``)."""
        if not isinstance(params, SamplingParams):
            raise RequestError(f"sampling_params must be SamplingParams, got {type(params).__name__}")
        text, ids = self.tokenize(prompt)
        mm_state: RequestExtension | None = None
        if isinstance(prompt, dict) and prompt.get("multi_modal_data") is not None:
            ids, mm_state = self.multimodal.apply(ids, prompt["multi_modal_data"])
            if params.truncate_prompt_tokens is not None:
                raise RequestError("truncate_prompt_tokens cannot be used with multi_modal_data (it would cut images)")
        ids = truncate_prompt(ids, params.truncate_prompt_tokens, self.max_model_len)
        params = check_params_for_model(params, self.vocab_size, self.tokenizer, self.max_logprobs)
        if not ids:
            raise RequestError("the prompt is empty: give at least one token")
        bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise RequestError(f"prompt token id {bad} is out of the vocabulary [0, {self.vocab_size})")
        if len(ids) >= self.max_model_len:
            raise RequestError(
                f"the prompt has {len(ids)} tokens but max_model_len is {self.max_model_len}: "
                "it must be shorter to leave room for at least one generated token; shorten the "
                "prompt or raise max_model_len"
            )
        room = self.max_model_len - len(ids)
        max_tokens = room if params.max_tokens is None else min(params.max_tokens, room)
        extensions = self.extensions_of(prompt, request_args)
        if mm_state is not None:
            extensions.set(mm_state)
        return text, EngineCoreRequest(
            request_id=request_id,
            prompt_token_ids=ids,
            sampling_params=params,
            eos_token_id=self.eos_token_id,
            max_tokens=max_tokens,
            arrival_time=time.monotonic(),
            extensions=extensions,
        )

    def extensions_of(self, prompt: PromptType, request_args: Mapping[str, Any] | None = None) -> ExtensionState:
        """The request's extension state from the prompt dict's extra keys (``cache_salt``) and
        the plugins' request arguments."""
        state = ExtensionState(self.request_arguments.extensions(request_args or {}))
        if isinstance(prompt, dict) and prompt.get("cache_salt") is not None:
            salt = prompt["cache_salt"]
            if not isinstance(salt, str) or not salt:
                raise RequestError(f"cache_salt must be a non-empty string, got {salt!r}")
            state.set(CacheSalt(salt))
        return state
