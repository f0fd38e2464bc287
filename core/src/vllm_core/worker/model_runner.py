"""``ModelRunner``: owns the model and its KV cache; runs one scheduled step."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from vllm_core.config import CacheConfig
from vllm_core.core.sched_output import ModelRunnerOutput, SchedulerOutput
from vllm_core.errors import KVCacheTooSmallError
from vllm_core.model_executor.model_loader.loader import LoadedModel
from vllm_core.platforms.interface import Platform
from vllm_core.sample.metadata import SamplingMetadata
from vllm_core.sample.sampler import Sampler
from vllm_core.worker.input_batch import prepare_inputs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KVCacheSpec:
    """The KV cache as sized at start-up."""

    num_blocks: int
    block_size: int
    bytes_per_block: int

    @property
    def num_tokens(self) -> int:
        return self.num_blocks * self.block_size


def kv_bytes_per_block(loaded: LoadedModel, block_size: int) -> int:
    layers = loaded.model.attention_layers()  # type: ignore[operator]
    elem = torch.tensor([], dtype=loaded.dtype).element_size()
    return sum(2 * block_size * a.num_kv_heads * a.head_size * elem for a in layers)


def size_kv_cache(
    cache_config: CacheConfig, loaded: LoadedModel, platform: Platform
) -> KVCacheSpec:
    """Blocks from ``num_gpu_blocks_override``, else ``kv_cache_memory_bytes``, else the platform."""
    per_block = kv_bytes_per_block(loaded, cache_config.block_size)
    if cache_config.num_gpu_blocks_override is not None:
        num_blocks = cache_config.num_gpu_blocks_override
    else:
        model_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
        budget = cache_config.kv_cache_memory_bytes or platform.kv_cache_bytes(cache_config, model_bytes)
        num_blocks = budget // per_block
        # More blocks than max_model_len needs per sequence times 512 sequences is wasted memory.
        cap = 512 * -(-loaded.max_model_len // cache_config.block_size)
        num_blocks = min(num_blocks, cap)
    needed = -(-loaded.max_model_len // cache_config.block_size)
    if num_blocks < needed:
        raise KVCacheTooSmallError(
            f"the KV cache holds {num_blocks} blocks of {cache_config.block_size} tokens "
            f"({num_blocks * cache_config.block_size} tokens) but one sequence of max_model_len="
            f"{loaded.max_model_len} needs {needed} blocks; raise kv_cache_memory_bytes / "
            "num_gpu_blocks_override or lower max_model_len"
        )
    return KVCacheSpec(num_blocks, cache_config.block_size, per_block)


class ModelRunner:
    """Runs the model on one ragged batch per step and samples the next tokens."""

    def __init__(
        self,
        loaded: LoadedModel,
        platform: Platform,
        kv_spec: KVCacheSpec,
        sampler: Sampler,
        seed: int,
    ) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.platform = platform
        self.device = platform.device()
        self.kv_spec = kv_spec
        self.sampler = sampler
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)
        self.request_generators: dict[str, torch.Generator] = {}
        self.kv_caches = self._allocate_kv_cache()

    def _allocate_kv_cache(self) -> list[torch.Tensor]:
        caches = []
        for attn in self.model.attention_layers():  # type: ignore[operator]
            shape = attn.impl.kv_cache_shape(
                self.kv_spec.num_blocks, self.kv_spec.block_size, attn.num_kv_heads, attn.head_size
            )
            cache = torch.zeros(shape, dtype=self.loaded.dtype, device=self.device)
            attn.kv_cache = cache
            caches.append(cache)
        return caches

    def _generator_for(self, req_id: str, seed: int) -> torch.Generator:
        gen = self.request_generators.get(req_id)
        if gen is None:
            gen = torch.Generator(device=self.device)
            gen.manual_seed(seed)
            self.request_generators[req_id] = gen
        return gen

    @torch.inference_mode()
    def execute(self, output: SchedulerOutput) -> ModelRunnerOutput:
        for rid in output.finished_req_ids:
            self.request_generators.pop(rid, None)
        if output.is_empty:
            return ModelRunnerOutput([])
        inputs = prepare_inputs(output, self.kv_spec.block_size, self.device)
        hidden = self.model(inputs.input_ids, inputs.positions, inputs.metadata)
        sampled: list[int | None] = [None] * len(output.scheduled)
        if not inputs.sample_rows:
            return ModelRunnerOutput(sampled)
        logits = self.model.compute_logits(hidden.index_select(0, inputs.logits_indices))  # type: ignore[operator]
        rows = [output.scheduled[i] for i in inputs.sample_rows]
        generators = {
            j: self._generator_for(r.req_id, r.sampling_params.seed)
            for j, r in enumerate(rows)
            if r.sampling_params.seed is not None and not r.sampling_params.is_greedy
        }
        metadata = SamplingMetadata.build(rows, generators, self.device)
        token_ids = self.sampler(logits, metadata, self.generator).tolist()
        for i, tok in zip(inputs.sample_rows, token_ids):
            sampled[i] = int(tok)
        return ModelRunnerOutput(sampled)
