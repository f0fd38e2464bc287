"""Prompt -> expanded token ids + ``MultiModalInputs``: the front end's multimodal step.

Runs in the input processor (the caller's thread, or the server's tokenizer thread), never in
the engine core's step loop: validating limits, the model's image processor (resize,
normalize), placeholder expansion, placeholder ranges, content hashes and M-RoPE positions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vllm_core.multimodal.hashing import hash_item
from vllm_core.multimodal.inputs import (
    MultiModalFeature,
    MultiModalInputError,
    MultiModalInputs,
    PlaceholderRange,
    parse_multi_modal_data,
)
from vllm_core.multimodal.registry import MultiModalProcessor, ProcessedItem


class MultiModalPromptProcessor:
    """Applies one model's ``MultiModalProcessor`` (or refuses images for a text-only model)."""

    def __init__(
        self, processor: MultiModalProcessor | None, limits: Mapping[str, int], model_name: str, block_size: int = 0,
    ) -> None:
        """``block_size``: the prefix cache's (image hashes key the blocks their tokens are in)."""
        self.processor = processor
        self.limits = dict(limits)
        self.model_name = model_name
        self.block_size = block_size

    @classmethod
    def create(
        cls, model_config: Any, hf_config: Any, tokenizer: Any, model_path: str, block_size: int = 0,
    ) -> MultiModalPromptProcessor:
        """The front end's handler for a loaded model (``ModelConfig``, its HF config and
        tokenizer, the KV cache's block size)."""
        from vllm_core.multimodal.registry import processor_for

        processor = processor_for(model_path, hf_config, tokenizer)
        return cls(processor, model_config.limit_mm_per_prompt, model_config.model or model_path, block_size)

    def apply(self, token_ids: Sequence[int], data: Any) -> tuple[list[int], MultiModalInputs]:
        """Expand each placeholder token of ``token_ids`` to its item's tokens; returns the new
        ids and the request's multimodal state."""
        proc = self.processor
        if proc is None:
            raise MultiModalInputError(
                f"model {self.model_name!r} is a text-only model and takes no images (multi_modal_data "
                f"has {', '.join(map(repr, data)) if isinstance(data, Mapping) else 'data'}); send text only "
                "or serve a vision-language model (LLaVA, Qwen2-VL with the vllm-multimodal plugin)"
            )
        by_modality = parse_multi_modal_data(data, self.limits, proc.modalities)
        processed: dict[str, list[tuple[Any, ProcessedItem]]] = {}
        for modality, items in by_modality.items():
            done = proc.process(modality, items)
            processed[modality] = list(zip(items, done))
        markers = {proc.placeholder_token_id(m): m for m in processed}
        counts = {m: sum(1 for t in token_ids if t == tok) for tok, m in markers.items()}
        for m, pairs in processed.items():
            if counts[m] != len(pairs):
                raise MultiModalInputError(
                    f"the prompt has {counts[m]} {m} placeholder(s) {proc.placeholder_text(m)!r} but "
                    f"multi_modal_data has {len(pairs)} {m}(s); put one placeholder where each {m} goes"
                )
        out: list[int] = []
        features: list[MultiModalFeature] = []
        next_item = {m: 0 for m in processed}
        for t in token_ids:
            if t not in markers:
                out.append(t)
                continue
            m = markers[t]
            raw, item = processed[m][next_item[m]]
            next_item[m] += 1
            features.append(MultiModalFeature(
                modality=m, identifier=hash_item(m, raw),
                placeholder=PlaceholderRange(len(out), item.num_tokens), data=item.data,
            ))
            out.extend([t] * item.num_tokens)
        rope = proc.mrope_positions(out, features)
        if rope is None:
            return out, MultiModalInputs(tuple(features), block_size=self.block_size)
        positions, delta = rope
        return out, MultiModalInputs(tuple(features), positions, int(delta), self.block_size)
