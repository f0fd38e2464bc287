"""EAGLE proposers: a small head drafts from the target's own hidden states.

``speculative_config={"method": "eagle", "model": HEAD_DIR, "num_speculative_tokens": k}`` (EAGLE-1:
the head reads the target's output hidden states) and ``{"method": "eagle3", ...}`` (EAGLE-3: it
reads the input of three target layers, concatenated and projected). The heads and their
checkpoint layout are in ``vllm_core.model_executor.models.eagle``.

Where the states come from: the proposer asks the runner for them
(``hidden_states_wanted``; the runner's ``HiddenStatesTap``) and, after every target step, writes
each token's state into a **hidden-state cache** laid out like the KV cache: one row per slot,
addressed by the step's slot mapping (``accept_hidden_states``). So a position's state lives in
its request's block, as its KV does: prefix-cache hits find it, a preempted request recomputes it,
and a rejected draft's state is overwritten when the position's real token is computed, exactly
as its KV is. The head keeps its own paged KV (one or a few layers) on the same block ids.

After every step, for each row it drafts for (``propose_step``), with ``n`` known tokens
``t_0 .. t_{n-1}`` (the last one just sampled, so the target's states exist for ``0 .. n-2``):

1. catch up: head rows ``i = seen .. n-2`` read ``(t_{i+1}, state_i)`` at position ``i``
   (``seen``: rows whose head KV is already right); the last row's output gives draft 1;
2. ``k - 1`` passes of one row per request: draft ``j`` at position ``n - 2 + j`` with the
   head's own previous output as its state gives draft ``j + 1``.

Drafts are the head's argmax (verified as one-hot: greedy requests exactly, random ones by
rejection sampling, which keeps the target's distribution). The scheduler keeps ``k`` lookahead
slots past each request's tokens for the passes' KV. A stale head KV (after preemption or a
backed-off stretch) only lowers acceptance: the target verifies every draft.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from vllm_core.config import SpeculativeConfig
from vllm_core.core.sched_output import ScheduledRequest, SchedulerOutput
from vllm_core.errors import ConfigError
from vllm_core.extensions.runner import RunnerContext, StepHiddenStates
from vllm_core.spec_decode.draft_model import _known_slice
from vllm_core.spec_decode.proposer import Proposer

if TYPE_CHECKING:
    from vllm_core.model_executor.models.eagle import EagleHead
    from vllm_core.worker.input_batch import ModelInputs

logger = logging.getLogger(__name__)


class EagleProposer(Proposer):
    """EAGLE-1: the head reads the target's output hidden states."""

    method: ClassVar[str] = "eagle"

    @classmethod
    def num_lookahead_slots(cls, config: SpeculativeConfig) -> int:
        return config.num_speculative_tokens

    def __init__(self, config: SpeculativeConfig, context: RunnerContext) -> None:
        super().__init__(config, context)
        from vllm_core.model_executor.models.eagle import read_head_checkpoint
        from vllm_core.model_executor.models.llama import LlamaForCausalLM

        target = context.model
        if context.platform is None or target is None:
            raise ConfigError(f"the {self.method} proposer needs the runner's platform and model (RunnerContext)")
        if not isinstance(target, LlamaForCausalLM):
            raise ConfigError(
                f"{self.method} drafts from the target's hidden states; {type(target).__name__} does not expose "
                "them (supported targets: the Llama family); use method 'ngram' or 'draft_model'"
            )
        # Tensor parallel: the head is small and built whole on every rank (its own layer, fc, norm
        # and EAGLE-3 head); it reads the target's hidden states, which every rank holds whole,
        # and calls the target's sharded embedding and LM head, whose collectives every rank runs
        # in the same order: each rank drafts the same tokens. A pipeline stage lacks the
        # embedding, the head or the hidden states.
        parallel = context.config.parallel
        if parallel.pipeline_parallel_size > 1:
            raise ConfigError(
                f"{self.method} reads the target's embedding, LM head and last hidden states, which "
                f"pipeline_parallel_size={parallel.pipeline_parallel_size} puts on different stages; use "
                "pipeline_parallel_size=1 (tensor_parallel_size may be > 1), or method 'ngram' or 'draft_model'"
            )
        self.platform = context.platform
        self.device = self.platform.device()
        self.target = target
        self.dtype = target.model.stage_layers[0].input_layernorm.weight.dtype
        head_config, tensors = read_head_checkpoint(str(config.model))
        self.head: Any = self._build(head_config, tensors)
        self.head.eval()
        self.hidden_size = int(head_config.hidden_size)
        self.block_size = 0
        self.hidden_cache: torch.Tensor | None = None
        """[num_blocks * block_size, hidden]: the head's input state of each slot's position."""
        self._seen: dict[str, int] = {}
        """req_id -> head rows whose KV is right (positions 0 .. seen - 1)."""
        self._first_block: dict[str, int] = {}
        logger.info("%s head %s loaded (%s)", self.method, config.model, type(self.head).__name__)

    # ------------------------------------------------------------------------- the head
    def _context(self, head_config: Any) -> Any:
        from vllm_core.model_executor.models.interface import ModelContext
        from vllm_core.model_executor.models.llama import head_dim_of

        backend = self.platform.select_attention_backend(head_dim_of(head_config), self.dtype)
        max_positions = max(self.context.config.model.max_model_len or 0,
                            getattr(head_config, "max_position_embeddings", 0) or 0,
                            getattr(self.target.config, "max_position_embeddings", 0) or 0)
        return ModelContext(ops=self.platform.ops, attention_backend=backend, max_positions=max_positions)

    def _check_sizes(self, head_config: Any, tensors: dict[str, torch.Tensor]) -> None:
        target_h, target_vocab = self.target.config.hidden_size, self.context.vocab_size
        head_h = head_config.hidden_size
        if int(getattr(head_config, "vocab_size", target_vocab)) != target_vocab:
            raise ConfigError(
                f"{self.method} head {self.config.model!r} has a vocabulary of {head_config.vocab_size} tokens but the "
                f"target has {target_vocab}; use the head trained for this target"
            )
        if "embed_tokens.weight" not in tensors and head_h != target_h:
            raise ConfigError(
                f"{self.method} head {self.config.model!r} has hidden_size {head_h} and no embedding of its own, but the "
                f"target's embedding has {target_h}; use the head trained for this target"
            )

    def _build(self, head_config: Any, tensors: dict[str, torch.Tensor]) -> EagleHead:
        from vllm_core.model_executor.models.eagle import EagleLlamaHead, head_weights, load_named

        self._check_sizes(head_config, tensors)
        if head_config.hidden_size != self.target.config.hidden_size:
            raise ConfigError(
                f"eagle head {self.config.model!r} has hidden_size {head_config.hidden_size} but the target's hidden "
                f"states have {self.target.config.hidden_size}; an EAGLE-1 head reads them as they are: use the "
                "head trained for this target"
            )
        weights = head_weights(self.method, tensors)
        with self._building():
            head = EagleLlamaHead(
                head_config, self.target, "embed_tokens.weight" in weights, self._context(head_config),
                fc_bias="fc.bias" in weights, first_layer_id=len(self.target.model.layers),
            )
        load_named(head, weights.items())
        return head

    def _building(self) -> Any:
        """Parameters made on the device in the target's dtype."""
        import contextlib

        @contextlib.contextmanager
        def scope() -> Any:
            old = torch.get_default_dtype()
            torch.set_default_dtype(self.dtype)
            try:
                with torch.device(self.device), torch.no_grad():
                    yield
            finally:
                torch.set_default_dtype(old)

        return scope()

    # ------------------------------------------------------------------- hidden states
    def hidden_states_wanted(self) -> tuple[int, ...] | None:
        return ()

    def target_states(self, hidden: StepHiddenStates, num_tokens: int) -> torch.Tensor:
        """[num_tokens, hidden]: the head's input state for each of the step's tokens."""
        return hidden.last[:num_tokens]

    def accept_hidden_states(self, output: SchedulerOutput, inputs: ModelInputs, hidden: StepHiddenStates) -> None:
        if self.hidden_cache is None:
            return  # the profiling run, before the cache exists
        n = inputs.num_actual_tokens
        states = self.target_states(hidden, n)
        self.hidden_cache.index_copy_(0, inputs.metadata.slot_mapping[:n], states.to(self.hidden_cache.dtype))

    # ---------------------------------------------------------------------------- cache
    def kv_bytes_per_block(self, block_size: int) -> int:
        elem = torch.tensor([], dtype=self.dtype).element_size()
        kv = sum(2 * block_size * a.num_kv_heads * a.head_size * elem for a in self.head.attention_layers())
        return kv + block_size * self.hidden_size * elem

    def kv_cache_initialized(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        for attn in self.head.attention_layers():
            shape = attn.impl.kv_cache_shape(num_blocks, block_size, attn.num_kv_heads, attn.head_size)
            attn.kv_cache = self.platform.allocate_kv_cache(tuple(shape), self.dtype)
        self.hidden_cache = torch.zeros(num_blocks * block_size, self.hidden_size, dtype=self.dtype, device=self.device)
        self._seen.clear()
        self._first_block.clear()

    def finish_requests(self, req_ids: set[str]) -> None:
        for rid in req_ids:
            self._seen.pop(rid, None)
            self._first_block.pop(rid, None)

    # ---------------------------------------------------------------------------- drafts
    def propose_step(
        self, rows: Sequence[ScheduledRequest], new_tokens: Sequence[Sequence[int]], max_drafts: Sequence[int]
    ) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in rows]
        if self.hidden_cache is None:
            return out
        catch_up: list[ScheduledRequest] = []
        members: list[int] = []
        budget: list[int] = []
        max_len = self.context.config.model.max_model_len or 1 << 62
        for i, (row, new, k) in enumerate(zip(rows, new_tokens, max_drafts)):
            if k <= 0 or not row.block_ids:
                continue
            known = len(row.prompt_token_ids) + len(row.output_token_ids) + len(new)
            seen = self._seen.get(row.req_id, 0)
            if row.start_pos < seen or self._first_block.get(row.req_id, row.block_ids[0]) != row.block_ids[0]:
                seen = 0  # preempted and started again: its head KV lives in other blocks now
            # head rows written: seen .. known - 2 (catch-up), then known - 1 .. known + k - 3 (passes)
            capacity = min(len(row.block_ids) * self.block_size, max_len)
            k = min(k, capacity - known + 2)
            if k <= 0 or seen >= known - 1:
                continue
            catch_up.append(ScheduledRequest(
                row.req_id, _known_slice(row, new, seen + 1), seen, list(row.block_ids), row.sampling_params,
                True, 0, None,
            ))
            members.append(i)
            budget.append(k)
            self._seen[row.req_id] = known - 1
            self._first_block[row.req_id] = row.block_ids[0]
        if not catch_up:
            return out
        tokens, state = self._forward(catch_up, None)
        for j, i in enumerate(members):
            out[i].append(tokens[j])
        live = list(range(len(members)))
        for t in range(1, max(budget)):
            keep = [pos for pos, j in enumerate(live) if budget[j] > t]
            if not keep:
                break
            live = [live[pos] for pos in keep]
            state = state.index_select(0, torch.tensor(keep, device=state.device))
            step = [
                ScheduledRequest(
                    catch_up[j].req_id, [out[members[j]][-1]], catch_up[j].start_pos + catch_up[j].num_tokens - 1 + t,
                    catch_up[j].block_ids, catch_up[j].sampling_params, True, 0, None,
                )
                for j in live
            ]
            tokens, state = self._forward(step, state)
            for j, tok in zip(live, tokens):
                out[members[j]].append(tok)
        return out

    def _forward(self, rows: list[ScheduledRequest], state: torch.Tensor | None) -> tuple[list[int], torch.Tensor]:
        """One head pass over ``rows``: each row's greedy draft and the state its next pass reads.
        ``state`` [len(rows), hidden]: the previous pass's (None: read the hidden-state cache)."""
        from vllm_core.worker.input_batch import prepare_inputs

        assert self.hidden_cache is not None
        inputs = prepare_inputs(SchedulerOutput(rows, sum(r.num_tokens for r in rows)), self.block_size, self.device)
        hidden_in = self.hidden_cache.index_select(0, inputs.metadata.slot_mapping) if state is None else state
        logit_rows, next_state = self.head(inputs.input_ids, inputs.positions, hidden_in, inputs.metadata)
        last = inputs.logits_indices
        drafts: list[int] = self.head.draft_tokens(logit_rows.index_select(0, last)).tolist()
        return drafts, next_state.index_select(0, last)


class Eagle3Proposer(EagleProposer):
    """EAGLE-3: the head reads the input of three target layers (low, middle, high), projected."""

    method: ClassVar[str] = "eagle3"

    def _build(self, head_config: Any, tensors: dict[str, torch.Tensor]) -> EagleHead:
        from vllm_core.model_executor.models.eagle import Eagle3LlamaHead, eagle3_aux_layers, head_weights, load_named

        self._check_sizes(head_config, tensors)
        target_h = self.target.config.hidden_size
        expected = int(getattr(head_config, "target_hidden_size", None) or head_config.hidden_size)
        if expected != target_h:
            raise ConfigError(
                f"eagle3 head {self.config.model!r} expects target hidden states of size {expected} "
                f"(target_hidden_size / hidden_size) but the target's are {target_h}; use the head trained for "
                "this target"
            )
        num_layers = len(self.target.model.layers)
        self.aux_layers = eagle3_aux_layers(head_config, num_layers)
        if not all(0 <= i < num_layers for i in self.aux_layers):
            raise ConfigError(
                f"eagle3 head {self.config.model!r} reads the target's layers {list(self.aux_layers)} "
                f"(eagle_aux_hidden_state_layer_ids) but the target has {num_layers} (0..{num_layers - 1}); use the "
                "head trained for this target or fix the ids in its config.json"
            )
        weights = head_weights(self.method, tensors)
        with self._building():
            head = Eagle3LlamaHead(
                head_config, self.target, "embed_tokens.weight" in weights, self._context(head_config),
                target_h, len(self.aux_layers), first_layer_id=len(self.target.model.layers),
            )
        load_named(head, weights.items())
        head.set_vocab_map(tensors.get("d2t"))
        return head

    def hidden_states_wanted(self) -> tuple[int, ...] | None:
        return self.aux_layers

    def target_states(self, hidden: StepHiddenStates, num_tokens: int) -> torch.Tensor:
        return self.head.combine(hidden.aux_of(self.aux_layers)[:num_tokens])
