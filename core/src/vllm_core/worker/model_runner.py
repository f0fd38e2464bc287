"""``ModelRunner``: owns the model and its KV cache; runs one scheduled step."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from vllm_core.config import CacheConfig, EngineConfig
from vllm_core.core.sched_output import ModelRunnerOutput, ScheduledRequest, SchedulerOutput
from vllm_core.errors import KVCacheTooSmallError
from vllm_core.extensions.runner import RunnerContext, RunnerExtensions, SampledTokens
from vllm_core.logprobs import LogprobsMode, PositionLogprobs, PromptLogprobsChunk
from vllm_core.model_executor.model_loader.loader import LoadedModel
from vllm_core.platforms.interface import Platform
from vllm_core.sample.logprobs import prompt_logprobs, sample_logprobs, verified_logprobs
from vllm_core.sample.metadata import SamplingMetadata
from vllm_core.sample.sampler import Sampler
from vllm_core.sampling_params import SamplingParams
from vllm_core.worker.graph_runner import GraphRunner
from vllm_core.worker.hidden_states import HiddenStatesTap
from vllm_core.worker.input_batch import ModelInputs, prepare_inputs
from vllm_core.worker.multi_token import draft_batch, expand_draft_rows
from vllm_core.worker.step_shapes import StepShapes
from vllm_core.worker.transfer import to_device

logger = logging.getLogger(__name__)

_PADDING_ROW = ScheduledRequest("", [], 0, [], SamplingParams(temperature=0.0, max_tokens=1), True, 0, None)
"""A padded sampling row (``Sampler.pads_rows``): greedy, no features, its token dropped."""


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
    cache_config: CacheConfig,
    loaded: LoadedModel,
    platform: Platform,
    profile: Callable[[], int] | None = None,
    prepared_bytes: int | None = None,
    extra_bytes_per_block: Callable[[int], int] | None = None,
) -> KVCacheSpec:
    """Blocks from ``num_gpu_blocks_override``, else the bytes the platform prepared before the
    model loaded (``prepared_bytes``), else ``kv_cache_memory_bytes``, else the platform.
    ``extra_bytes_per_block(block_size)``: what runner extensions keep per block beside the
    model's cache (a draft model's own KV); a block costs the sum.

    On accelerators ``profile`` runs the largest step once and returns its peak activation
    bytes; the cache gets ``gpu_memory_utilization`` x total minus what is in use minus that peak.
    """
    block_size = cache_config.block_size or platform.default_block_size
    per_block = kv_bytes_per_block(loaded, block_size)
    if extra_bytes_per_block is not None:
        per_block += extra_bytes_per_block(block_size)
    if cache_config.num_gpu_blocks_override is not None:
        num_blocks = cache_config.num_gpu_blocks_override
    else:
        if prepared_bytes is not None:
            budget = prepared_bytes
        elif cache_config.kv_cache_memory_bytes is not None:
            budget = cache_config.kv_cache_memory_bytes
        elif platform.is_accelerator and profile is not None:
            activation = profile()
            free, total = platform.memory_info()
            budget = int(total * cache_config.gpu_memory_utilization) - (total - free) - activation
            logger.info(
                "memory: total %.2f GiB, in use %.2f GiB, activation peak %.2f GiB, KV cache %.2f GiB",
                total / 2**30, (total - free) / 2**30, activation / 2**30, budget / 2**30,
            )
        else:
            model_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
            budget = platform.kv_cache_bytes(cache_config, model_bytes)
        num_blocks = max(budget, 0) // per_block
        if not platform.is_accelerator:
            # On CPU, more than 512 sequences of max_model_len is memory nobody uses.
            num_blocks = min(num_blocks, 512 * -(-loaded.max_model_len // block_size))
    needed = -(-loaded.max_model_len // block_size)
    if num_blocks < needed:
        raise KVCacheTooSmallError(
            f"the KV cache holds {num_blocks} blocks of {block_size} tokens "
            f"({num_blocks * block_size} tokens) but one sequence of max_model_len="
            f"{loaded.max_model_len} needs {needed} blocks; raise kv_cache_memory_bytes / "
            "num_gpu_blocks_override / gpu_memory_utilization or lower max_model_len"
        )
    return KVCacheSpec(num_blocks, block_size, per_block)


@dataclass
class PendingRunnerOutput:
    """A launched step whose sampled tokens are on their way to the host."""

    num_scheduled: int
    sample_rows: list[int]
    """Index into ``SchedulerOutput.scheduled`` of each sampling row."""
    fetch: Callable[[], list[int]] | Callable[[], list[list[int]]] | None
    """Each sampling row's token (one-token steps) or tokens (multi-token steps)."""
    logprobs: Mapping[str, PositionLogprobs | list[PositionLogprobs]] | None = None
    prompt_logprobs: dict[str, PromptLogprobsChunk] | None = None
    draft_token_ids: dict[str, list[int]] | None = None

    def get(self) -> ModelRunnerOutput:
        """Wait for the tokens; aligned with the scheduled requests (empty: nothing sampled)."""
        sampled: list[list[int]] = [[] for _ in range(self.num_scheduled)]
        if self.fetch is not None:
            for i, tok in zip(self.sample_rows, self.fetch()):
                sampled[i] = [int(t) for t in tok] if isinstance(tok, list) else [int(tok)]  # type: ignore[call-overload]
        return ModelRunnerOutput(sampled, self.logprobs, self.prompt_logprobs, self.draft_token_ids)


class ModelRunner:
    """Runs the model on one ragged batch per step and samples the next tokens.

    Features plug in as runner extensions (``vllm_core.extensions.runner``): the runner calls
    them at fixed points of the step and knows none of them by name. A platform may fix every
    step's shapes (``Platform.step_shapes``), choose the autograd mode
    (``Platform.inference_context``) and where random generators live (``make_generator``).
    """

    logprobs_mode: LogprobsMode = "raw_logprobs"
    """What sampled-token logprobs report (the engine sets it from ``ModelConfig``)."""

    def __init__(
        self, loaded: LoadedModel, platform: Platform, sampler: Sampler, seed: int,
        config: EngineConfig | None = None,
    ) -> None:
        """``config``: the engine's; runner extensions are created for it (None: no extensions)."""
        self.loaded = loaded
        self.model = loaded.model
        self.platform = platform
        self.device = platform.device()
        self.sampler = sampler
        self.seed = seed
        self.generator = platform.make_generator(seed)
        self.request_generators: dict[str, torch.Generator] = {}
        self.extensions = (
            RunnerExtensions([]) if config is None else RunnerExtensions.create(
                RunnerContext(
                    config, loaded.tokenizer, loaded.text_config.vocab_size, self.device, loaded.model, platform,
                    loaded.model_path,
                )
            )
        )
        self.hidden_tap = None if config is None else HiddenStatesTap.create(
            self.model, self.extensions, max(config.scheduler.max_num_batched_tokens or 0, config.scheduler.max_num_seqs)
        )
        """The step's hidden states for the extensions that read them (None: none does)."""
        self.kv_spec: KVCacheSpec | None = None
        self.kv_caches: list[torch.Tensor] = []
        self.graph_runner: GraphRunner | None = None
        self.step_shapes: StepShapes | None = None
        """The platform's fixed step shapes (None: every step has its own)."""
        self.block_size = 0
        self._prev_sampled = torch.empty(0, dtype=torch.int64)
        """[num_sampled] int64 on the device: the last launched step's tokens (placeholders)."""
        self._prev_rows: dict[str, int] = {}
        """Row of each request in ``_prev_sampled``."""

    # ------------------------------------------------------------------------ start-up
    def _allocate(self, num_blocks: int, block_size: int) -> list[torch.Tensor]:
        self.block_size = block_size
        caches = []
        for attn in self.model.attention_layers():  # type: ignore[operator]
            shape = attn.impl.kv_cache_shape(num_blocks, block_size, attn.num_kv_heads, attn.head_size)
            cache = self.platform.allocate_kv_cache(tuple(shape), self.loaded.dtype)
            attn.kv_cache = cache
            caches.append(cache)
        return caches

    def initialize_kv_cache(self, kv_spec: KVCacheSpec) -> None:
        self.kv_spec = kv_spec
        self.kv_caches = self._allocate(kv_spec.num_blocks, kv_spec.block_size)
        self.extensions.kv_cache_initialized(kv_spec.num_blocks, kv_spec.block_size)

    def set_step_shapes(self, max_num_seqs: int, max_num_batched_tokens: int, max_model_len: int, block_size: int) -> None:
        """Ask the platform whether it fixes the step's shapes (buckets for every step)."""
        self.step_shapes = self.platform.step_shapes(max_num_seqs, max_num_batched_tokens, max_model_len, block_size)
        if self.step_shapes is not None:
            logger.info("static step shapes: %s", self.step_shapes.describe())
        if self.hidden_tap is not None:  # before graphs are captured: they keep the buffers they saw
            shapes = self.step_shapes.token_buckets if self.step_shapes is not None else ()
            self.hidden_tap.reserve(max(max_num_batched_tokens, max_num_seqs, *shapes))

    def profile_run(self, num_tokens: int, num_seqs: int, block_size: int) -> int:
        """Run the largest step (``num_tokens`` over ``num_seqs`` requests, every row sampled with
        top-k/top-p) on a scratch KV cache; returns the peak bytes beyond what was in use."""
        num_seqs = max(1, min(num_seqs, num_tokens))
        base, extra = divmod(num_tokens, num_seqs)
        lens = [base + (1 if i < extra else 0) for i in range(num_seqs)]
        blocks_per = [-(-n // block_size) for n in lens]
        params = SamplingParams(temperature=0.8, top_p=0.9, top_k=50, max_tokens=1)
        rows, next_block = [], 0
        for i, n in enumerate(lens):
            ids = list(range(next_block, next_block + blocks_per[i]))
            next_block += blocks_per[i]
            rows.append(ScheduledRequest(f"profile-{i}", [0] * n, 0, ids, params, True, 0, None))
        if self.hidden_tap is not None:  # a buffer kept for good: in use, not activation
            self.hidden_tap.reserve(num_tokens)
        self.platform.synchronize()
        before = self.platform.current_memory_bytes() or 0
        self.platform.reset_peak_memory()
        self._allocate(next_block, block_size)
        self.execute(SchedulerOutput(rows, num_tokens))
        self.platform.synchronize()
        peak = self.platform.peak_memory_bytes() or before
        for attn in self.model.attention_layers():  # type: ignore[operator]
            attn.kv_cache = torch.empty(0)
        self.request_generators.clear()
        return max(peak - before, 0)

    def capture_graphs(self, max_num_seqs: int, max_model_len: int) -> None:
        assert self.kv_spec is not None
        self.graph_runner = self.platform.make_graph_runner(self.model, max_num_seqs, max_model_len, self.kv_spec.block_size)
        if self.graph_runner is not None:
            self.graph_runner.capture()
            logger.info("captured graphs for batch sizes %s", self.graph_runner.captured_sizes)

    # -------------------------------------------------------------------------- a step
    def _generator_for(self, req_id: str, seed: int) -> torch.Generator:
        gen = self.request_generators.get(req_id)
        if gen is None:
            gen = self.platform.make_generator(seed)
            self.request_generators[req_id] = gen
        return gen

    def _pending_tokens(self, req_id: str) -> list[int]:
        """The token the step in flight sampled for a request (waits for it): penalties and bad
        words must count it although the scheduler has not seen it yet."""
        row = self._prev_rows.get(req_id)
        return [] if row is None else [int(self._prev_sampled[row])]

    def execute(self, output: SchedulerOutput) -> ModelRunnerOutput:
        """Run one step and wait for its sampled tokens."""
        return self.execute_async(output).get()

    def execute_async(self, output: SchedulerOutput) -> PendingRunnerOutput:
        """Launch one step; the sampled tokens are fetched by ``get()`` on the result.

        Placeholder tokens (async scheduling) are the previous step's samples: they are taken
        from device memory, so the host never waits for them before launching this step.
        """
        with self.platform.inference_context():
            return self._execute(output)

    def _execute(self, output: SchedulerOutput) -> PendingRunnerOutput:
        for rid in output.finished_req_ids:
            self.request_generators.pop(rid, None)
        self.extensions.finish_requests(output.finished_req_ids)
        if output.is_empty:
            return PendingRunnerOutput(0, [], None)
        inputs = prepare_inputs(output, self.block_size, self.device, self.step_shapes)
        self._fill_placeholders(output, inputs)
        self.extensions.prepare_step(output, inputs)
        rows = [output.scheduled[i] for i in inputs.sample_rows]
        self.extensions.prepare_rows(rows)
        # captured graphs hold token ids and 1-D positions: a step an extension gave embeddings
        # or multi-axis positions runs eagerly
        plain = inputs.inputs_embeds is None and inputs.positions.dim() == 1
        replay = self.graph_runner is not None and plain and self.extensions.allows_graph()
        hidden = self.graph_runner.try_run(inputs) if replay and self.graph_runner is not None else None
        if hidden is None:
            hidden = (
                self.model(inputs.input_ids, inputs.positions, inputs.metadata) if inputs.inputs_embeds is None
                else self.model(inputs.input_ids, inputs.positions, inputs.metadata, inputs_embeds=inputs.inputs_embeds)
            )
            if hidden is None:  # a pipeline stage before the last: it sent its output on
                return PendingRunnerOutput(len(output.scheduled), [], None)
        if self.hidden_tap is not None:
            self.extensions.accept_hidden_states(output, inputs, self.hidden_tap.step(hidden))
        prompt_lps = prompt_logprobs(
            self.model.compute_logits, hidden, output.scheduled, inputs.metadata.query_start_loc_cpu,  # type: ignore[arg-type]
            self._prompt_logits_rows if self.extensions.wants_logits_rows else None,
        )
        if not inputs.sample_rows:
            return PendingRunnerOutput(len(output.scheduled), [], None, prompt_logprobs=prompt_lps)
        if self.extensions.wants_logits_rows:
            self.extensions.prepare_logits(inputs.logits_indices)
        logits = self.model.compute_logits(hidden.index_select(0, inputs.logits_indices))  # type: ignore[operator]
        drafted = any(r.draft_token_ids for r in rows)
        if inputs.num_logits_rows < logits.shape[0] and (drafted or not self.sampler.pads_rows):
            logits = logits[: inputs.num_logits_rows]  # padded rows (static shapes)
        if drafted:
            return self._verify(output, inputs, rows, logits, prompt_lps)
        generators = {
            j: self._generator_for(r.req_id, r.sampling_params.seed)
            for j, r in enumerate(rows)
            if r.sampling_params.seed is not None and not r.sampling_params.is_greedy
        }
        padded = rows + [_PADDING_ROW] * (logits.shape[0] - len(rows))  # Sampler.pads_rows
        metadata = SamplingMetadata.build(padded, generators, self.device, pending=self._pending_tokens)
        metadata.token_bitmask = self.extensions.logits_mask(rows, self.device)
        sampled = self.sampler(logits, metadata, self.generator)
        logprobs = sample_logprobs(logits, sampled, metadata, rows, self.sampler, self.logprobs_mode)
        tokens = SampledTokens(tensor=sampled if len(padded) == len(rows) else sampled[: len(rows)])
        self.extensions.accept_tokens(rows, tokens)
        drafts = None if output.async_step else self.extensions.propose_drafts(rows, tokens)
        self._prev_sampled = sampled
        self._prev_rows = {r.req_id: j for j, r in enumerate(rows)}
        return PendingRunnerOutput(
            len(output.scheduled), inputs.sample_rows, self.platform.to_host_async(sampled), logprobs, prompt_lps,
            drafts,
        )

    def _prompt_logits_rows(self, first_row: int, num_rows: int) -> None:
        """Extensions learn the token rows of a prompt-logprobs ``compute_logits`` call."""
        self.extensions.prepare_logits(torch.arange(first_row, first_row + num_rows, device=self.device))

    def _fill_placeholders(self, output: SchedulerOutput, inputs: ModelInputs) -> None:
        """Async scheduling: the tokens the step in flight sampled, from device memory."""
        if not inputs.placeholder_positions:
            return
        src = [self._prev_rows[output.scheduled[r].req_id] for r in inputs.placeholder_reqs]
        index = to_device(torch.tensor(inputs.placeholder_positions, dtype=torch.int64), self.device)
        inputs.input_ids[index] = self._prev_sampled[to_device(torch.tensor(src, dtype=torch.int64), self.device)]

    def _verify(
        self, output: SchedulerOutput, inputs: ModelInputs, rows: list[ScheduledRequest], logits: torch.Tensor,
        prompt_lps: dict[str, PromptLogprobsChunk] | None,
    ) -> PendingRunnerOutput:
        """A multi-token step: ``k + 1`` logits rows per request with ``k`` drafts, verified by
        the sampler (exact match for greedy rows, rejection sampling for random ones, seeded
        requests drawing from their own generators); rows without drafts sample as in any step.
        Logprobs are those of every kept token.

        Nothing here waits for the device before the verification is launched (row indices are
        built on the host and copied through pinned memory, the drafts are read from host lists),
        so on an accelerator this bookkeeping overlaps the forward pass; the one wait is for the
        verified tokens."""
        num_rows = np.fromiter((len(r.draft_token_ids) + 1 for r in rows), dtype=np.int64, count=len(rows))
        starts = np.cumsum(num_rows) - num_rows
        drafted = [j for j, r in enumerate(rows) if r.draft_token_ids]
        plain = [j for j, r in enumerate(rows) if not r.draft_token_ids]
        accepted: list[list[int]] = [[] for _ in rows]
        logprobs: dict[str, PositionLogprobs | list[PositionLogprobs]] = {}
        plain_sampled = None
        if plain:
            plain_rows = [rows[j] for j in plain]
            plain_logits = logits[to_device(starts[plain], logits.device)]
            metadata = SamplingMetadata.build(plain_rows, self._seeded(plain_rows), self.device)
            metadata.token_bitmask = self.extensions.logits_mask(plain_rows, self.device)
            plain_sampled = self.sampler(plain_logits, metadata, self.generator)
            logprobs.update(
                sample_logprobs(plain_logits, plain_sampled, metadata, plain_rows, self.sampler, self.logprobs_mode) or {}
            )
        draft_rows = [rows[j] for j in drafted]
        if plain:  # the drafted requests' rows; without plain rows that is every row
            index = np.concatenate([np.arange(starts[j], starts[j] + num_rows[j]) for j in drafted])
            draft_logits = logits[to_device(index, logits.device)]
        else:
            draft_logits = logits
        expanded = expand_draft_rows(draft_rows)
        metadata = SamplingMetadata.build(expanded, {}, self.device)
        metadata.token_bitmask = self.extensions.logits_mask(expanded, self.device)
        drafts_in = draft_batch(draft_rows, self.device, self.extensions.draft_probs, logits.shape[-1])
        verified = self.sampler.verify(draft_logits, metadata, drafts_in, self.generator, self._seeded(draft_rows))
        logprobs.update(
            verified_logprobs(draft_logits, verified, metadata, draft_rows, self.sampler, self.logprobs_mode) or {}
        )
        for j, toks in zip(drafted, verified):
            accepted[j] = toks
        if plain_sampled is not None:
            for j, tok in zip(plain, plain_sampled.tolist()):
                accepted[j] = [int(tok)]
        tokens = SampledTokens(lists=accepted)
        self.extensions.accept_tokens(rows, tokens)
        drafts = None if output.async_step else self.extensions.propose_drafts(rows, tokens)
        self._prev_rows = {}
        return PendingRunnerOutput(
            len(output.scheduled), inputs.sample_rows, lambda: accepted, logprobs or None, prompt_lps, drafts
        )

    def _seeded(self, rows: list[ScheduledRequest]) -> dict[int, torch.Generator]:
        """Row index -> the request's own generator, for seeded random rows."""
        return {
            i: self._generator_for(r.req_id, r.sampling_params.seed)
            for i, r in enumerate(rows)
            if r.sampling_params.seed is not None and not r.sampling_params.is_greedy
        }
