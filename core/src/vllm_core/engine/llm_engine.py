"""``LLMEngine``: the synchronous engine behind ``LLM`` (input processing, core, outputs)."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from typing import Any

from vllm_core.config import EngineConfig
from vllm_core.engine.engine_core import start_engine_core
from vllm_core.engine.input_processor import InputProcessor, PromptType
from vllm_core.engine.output_processor import OutputProcessor, fan_out
from vllm_core.errors import RequestError
from vllm_core.multimodal.processing import MultiModalPromptProcessor
from vllm_core.outputs import RequestOutput
from vllm_core.plugins.arguments import FrontendContext, RequestArguments
from vllm_core.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


def eos_token_id_of(tokenizer: Any, hf_config: Any) -> int | None:
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    eos = getattr(hf_config, "eos_token_id", None)
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    return eos


class LLMEngine:
    """Accepts requests, steps the core, returns ``RequestOutput``s."""

    def __init__(self, config: EngineConfig, use_tqdm: bool = True) -> None:
        self.config = config
        self.platform, self.loaded, self.core = start_engine_core(config, use_tqdm=use_tqdm)
        self.tokenizer = self.loaded.tokenizer
        self.max_model_len = self.loaded.max_model_len
        self.input_processor = InputProcessor(
            self.tokenizer, self.max_model_len, self.loaded.text_config.vocab_size,
            eos_token_id_of(self.tokenizer, self.loaded.hf_config), config.model.max_logprobs,
            RequestArguments.create(FrontendContext(config, self.loaded.hf_config, self.tokenizer)),
            MultiModalPromptProcessor.create(
                config.model, self.loaded.hf_config, self.tokenizer, self.loaded.model_path, self.core.kv_spec.block_size
            ),
        )
        self.output_processor = OutputProcessor(self.tokenizer)
        self._ids = itertools.count()

    def next_request_id(self) -> str:
        return str(next(self._ids))

    def add_request(
        self, request_id: str, prompt: PromptType, params: SamplingParams,
        request_args: Mapping[str, Any] | None = None,
    ) -> None:
        """Validate and queue a request; a bad one raises ``RequestError`` and changes nothing.
        ``request_args``: plugin keyword arguments (``{"lora_request": LoRARequest(...)}``)."""
        if request_id in self.output_processor.requests:
            raise RequestError(f"request id {request_id!r} is already in use")
        text, core_req = self.input_processor.process(request_id, prompt, params, request_args)
        params = core_req.sampling_params  # checked against the model (bad words tokenized)
        children = fan_out(request_id, params)
        self.output_processor.add_request(request_id, text, core_req.prompt_token_ids, children, params)
        for child_id, child_params in children:
            core_req.request_id, core_req.sampling_params = child_id, child_params
            self.core.add_request(_copy(core_req))

    def abort_request(self, request_ids: list[str]) -> None:
        for rid in request_ids:
            self.core.abort_requests(self.output_processor.abort_request(rid))

    def has_unfinished_requests(self) -> bool:
        return self.output_processor.has_unfinished_requests()

    def step(self) -> list[RequestOutput]:
        outputs = self.core.step()
        results, to_abort = self.output_processor.process(outputs)
        if to_abort:
            self.core.abort_requests(to_abort)
        return results

    def get_tokenizer(self) -> Any:
        return self.tokenizer


def _copy(req: Any) -> Any:
    from dataclasses import replace

    return replace(req)
