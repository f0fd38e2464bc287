"""What the vision-language models share: the core decoder inside, weights split by prefix.

A model here satisfies the core's ``CausalLM`` contract (forward with optional
``inputs_embeds``, ``compute_logits``, ``attention_layers``, ``load_weights``) plus what the
``multimodal`` runner extension calls:

- ``embed_input_ids(input_ids [T]) -> [T, hidden]``
- ``embed_multimodal(features) -> [tensor [num_tokens, hidden] per feature]`` (the vision
  encoder and projector, batched over the features given)
- ``uses_mrope``: True when ``forward`` takes [3, T] positions (Qwen2-VL)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from vllm_core.plugins.api import AttentionMetadata, ModelLoadError, MultiModalFeature, Weight, materialize


class VisionLanguageModel(nn.Module):
    """Base class: ``self.language_model`` is the core's decoder; subclasses build the vision
    side and map checkpoint names (``lm_name`` / ``vision_name``)."""

    uses_mrope: ClassVar[bool] = False
    language_model: Any

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, metadata: AttentionMetadata,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor | None:
        return self.language_model(input_ids, positions, metadata, inputs_embeds)  # type: ignore[no-any-return]

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.language_model.compute_logits(hidden)  # type: ignore[no-any-return]

    def attention_layers(self) -> list[Any]:
        return self.language_model.attention_layers()  # type: ignore[no-any-return]

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.language_model.embed_input_ids(input_ids)  # type: ignore[no-any-return]

    def embed_multimodal(self, features: Sequence[MultiModalFeature]) -> list[torch.Tensor]:
        raise NotImplementedError

    # ----------------------------------------------------------------------------- weights
    def lm_name(self, name: str) -> str | None:
        """The language model's name for a checkpoint tensor, or None when it is not the LM's."""
        for prefix in ("model.language_model.", "language_model.model."):
            if name.startswith(prefix):
                return "model." + name[len(prefix):]
        if name in ("lm_head.weight", "language_model.lm_head.weight"):
            return "lm_head.weight"
        return None

    def vision_name(self, name: str) -> str | None:
        """This module's parameter name for a vision-side checkpoint tensor; None: skip it."""
        return name.removeprefix("model.")

    def load_weights(self, weights: Iterable[tuple[str, Weight]]) -> set[str]:
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        lm_weights: list[tuple[str, Weight]] = []

        def lm_stream() -> Iterator[tuple[str, Weight]]:
            yield from lm_weights

        for name, tensor in weights:
            lm = self.lm_name(name)
            if lm is not None:
                lm_weights.append((lm, tensor))
                continue
            target = self.vision_name(name)
            if target is None:
                continue
            if target not in params:
                raise ModelLoadError(
                    f"weight {name!r} has no matching parameter in {type(self).__name__}; the checkpoint "
                    "does not match the architecture in its config"
                )
            full = materialize(tensor)
            if params[target].shape != full.shape:
                raise ModelLoadError(f"weight {name!r} has shape {tuple(full.shape)}, expected {tuple(params[target].shape)}")
            params[target].data.copy_(full)
            loaded.add(target)
        loaded |= {f"language_model.{n}" for n in self.language_model.load_weights(lm_stream())}
        return loaded

    def expected_weights(self) -> set[str]:
        lm = {f"language_model.{n}" for n in self.language_model.expected_weights()}
        vision = {n for n, _ in self.named_parameters() if not n.startswith("language_model.")}
        return lm | vision
