"""``EngineCore``: scheduler + model runner; token ids in, token ids out.

``step()`` is the whole loop: schedule, execute, update. Everything textual (tokenizing,
detokenizing, stop strings) happens outside, so the core can move to its own process.
"""

from __future__ import annotations

import logging

from vllm_core.config import EngineConfig
from vllm_core.core.kv_cache_manager import KVCacheManager
from vllm_core.core.scheduler import Scheduler, resolve_max_num_batched_tokens
from vllm_core.engine.core_types import EngineCoreOutput, EngineCoreRequest
from vllm_core.model_executor.model_loader.loader import LoadedModel
from vllm_core.platforms.interface import Platform
from vllm_core.request import Request, RequestStatus
from vllm_core.worker.model_runner import ModelRunner, size_kv_cache

logger = logging.getLogger(__name__)


class EngineCore:
    """Owns the KV cache, the scheduler and the model runner."""

    def __init__(self, config: EngineConfig, platform: Platform, loaded: LoadedModel) -> None:
        from vllm_core.plugins import registry

        self.config = config
        self.platform = platform
        sampler = registry.samplers().get(platform.sampler_name())()
        self.runner = ModelRunner(loaded, platform, sampler, config.model.seed)
        sc = config.scheduler
        budget = resolve_max_num_batched_tokens(sc, loaded.max_model_len)
        self.kv_spec = size_kv_cache(
            config.cache, loaded, platform,
            profile=lambda: self.runner.profile_run(budget, sc.max_num_seqs, config.cache.block_size),
        )
        self.runner.initialize_kv_cache(self.kv_spec)
        if not config.model.enforce_eager:
            self.runner.capture_graphs(sc.max_num_seqs, loaded.max_model_len)
        self.kv_cache_manager = KVCacheManager(
            self.kv_spec.num_blocks, self.kv_spec.block_size, config.cache.enable_prefix_caching
        )
        self.scheduler = Scheduler(config.scheduler, self.kv_cache_manager, loaded.max_model_len)
        max_conc = self.kv_spec.num_tokens / loaded.max_model_len
        logger.info(
            "KV cache: %d blocks of %d tokens (%.1f MiB); %.1fx concurrency at max_model_len=%d",
            self.kv_spec.num_blocks, self.kv_spec.block_size,
            self.kv_spec.num_blocks * self.kv_spec.bytes_per_block / 2**20, max_conc, loaded.max_model_len,
        )

    def add_request(self, req: EngineCoreRequest) -> None:
        self.scheduler.add_request(
            Request(
                req.request_id, req.prompt_token_ids, req.sampling_params,
                req.eos_token_id, req.max_tokens, req.arrival_time,
            )
        )

    def abort_requests(self, request_ids: list[str]) -> None:
        self.scheduler.finish_requests(request_ids, RequestStatus.FINISHED_ABORTED)

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished_requests()

    def step(self) -> list[EngineCoreOutput]:
        sched_out = self.scheduler.schedule()
        runner_out = self.runner.execute(sched_out)
        updates = self.scheduler.update_from_output(sched_out, runner_out)
        return [
            EngineCoreOutput(
                req.request_id, [token], req.status.finish_reason, req.stop_reason,
                max(req.num_cached_tokens, 0),
            )
            for req, token in updates
        ]
