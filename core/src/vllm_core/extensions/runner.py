"""Runner extensions: a feature's per-step callbacks inside the model runner.

A feature registers a ``RunnerExtension`` subclass through the ``register_runner_extensions``
hook. Every model runner asks each registered class to ``create`` itself for the engine it
serves (None: the feature is off for this engine) and then calls the instances at fixed points
of every step; the runner, the engine core and the scheduler know no feature by name::

    add_request          a request reached the engine core (start preparing it)
    is_ready             may the scheduler start this waiting request now?
    finish_requests      requests finished or aborted: drop their state
    prepare_rows         before the forward pass, with the step's sampling rows
    logits_mask          allowed tokens per sampling row (applied before any sampling)
    prepare_step         before the forward pass, with the whole step and its input tensors
    allows_graph         after prepare_step: may this step replay a captured graph?
    accept_hidden_states after the forward pass: the step's hidden states (for an extension
                         that asked for them with ``hidden_states_wanted``: EAGLE drafts)
    accept_tokens        the tokens each sampling row produced this step
    propose_drafts       draft tokens for each row's next step (speculative decoding)
    draft_probs          the distributions sampled drafts were drawn from (verification)

and, once at start-up, ``kv_bytes_per_block`` (KV memory of the extension's own per block of the
model's cache, counted when the cache is sized) and ``kv_cache_initialized`` (the cache's shape,
for an extension that keeps a paged cache beside it: a draft model).

Two more seams start from an extension class: ``create`` receives the loaded model in
``RunnerContext.model`` and may wrap its modules (LoRA wraps the projections) before the
profiling run and graph capture; ``step_constraint`` gives the scheduler (in the engine core's
process) a rule on which waiting requests may join a step (LoRA: at most ``max_loras``
adapters in one step).

Callbacks run on the runner's thread, inside the step; keep them cheap or move the work to a
thread of your own (structured outputs compile grammars in the background and answer
``is_ready`` False meanwhile).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from vllm_core.extensions.state import ExtensionState
from vllm_core.sample.token_mask import TokenBitmask, merge_token_bitmasks
from vllm_core.sampling_params import SamplingParams

if TYPE_CHECKING:
    from vllm_core.config import EngineConfig
    from vllm_core.core.sched_output import ScheduledRequest, SchedulerOutput
    from vllm_core.core.step_constraint import StepConstraint
    from vllm_core.platforms.interface import Platform
    from vllm_core.worker.input_batch import ModelInputs


@dataclass(frozen=True)
class RunnerContext:
    """What an extension may know about the engine it serves."""

    config: EngineConfig
    tokenizer: Any | None
    """The model's Hugging Face tokenizer (None with ``skip_tokenizer_init``)."""
    vocab_size: int
    device: torch.device
    model: Any = None
    """The loaded model (an ``nn.Module``): ``create`` may wrap its submodules, before the
    profiling run and graph capture. None for runners that hold no model."""
    platform: Platform | None = None
    """The runner's ``Platform`` (its device type and ops; an extension that runs a model of its
    own uses it), or None."""
    model_path: str | None = None
    """The checkpoint the model was loaded from (a directory or a ``.gguf`` file; resolved, so
    the default model's path too), or None. An extension that re-reads weights in another form
    (the CPU platform keeps GGUF blocks quantized) opens it."""


@dataclass
class SampledTokens:
    """The tokens a step's sampling rows produced: a device tensor for one-token steps (read on
    the host only when asked), host lists for multi-token steps."""

    tensor: torch.Tensor | None = None
    """[S] int64 on the device: each row's token (one-token steps)."""
    lists: list[list[int]] | None = None
    """Per row, the tokens it accepted (multi-token steps)."""

    def rows(self, indices: Sequence[int]) -> list[list[int]]:
        """The tokens of the given rows (a host copy of those rows only)."""
        if self.lists is not None:
            return [self.lists[i] for i in indices]
        if self.tensor is None or not indices:
            return [[] for _ in indices]
        picked = self.tensor[torch.tensor(list(indices), device=self.tensor.device)].tolist()
        return [[int(t)] for t in picked]


@dataclass
class StepHiddenStates:
    """One step's hidden states, token rows in the order of the step's ``input_ids`` (rows past
    ``inputs.num_actual_tokens`` are padding)."""

    last: torch.Tensor
    """[T, hidden]: the model's output (after its final norm), the rows logits are computed from."""
    aux: torch.Tensor | None = None
    """[T, len(aux_layers) * hidden]: the input of each of ``aux_layers`` (the residual stream
    entering that decoder layer), concatenated in that order; None when no layer was asked for."""
    aux_layers: tuple[int, ...] = ()

    def aux_of(self, layers: Sequence[int]) -> torch.Tensor:
        """[T, len(layers) * hidden]: the given layers' columns of ``aux``, in that order."""
        if self.aux is None:
            raise ValueError(f"no auxiliary hidden states were kept; asked for layers {list(layers)}")
        if tuple(layers) == self.aux_layers:
            return self.aux
        width = self.aux.shape[1] // len(self.aux_layers)
        cols = [self.aux[:, self.aux_layers.index(i) * width : (self.aux_layers.index(i) + 1) * width] for i in layers]
        return torch.cat(cols, dim=-1)


class RunnerExtension:
    """Base class: every callback is optional and does nothing by default."""

    name: ClassVar[str]
    """Registry name (``vllm-core plugins`` lists it)."""
    supports_async_scheduling: ClassVar[bool] = True
    """False when the feature needs each step's tokens before the next step is scheduled
    (speculative proposers): the engine then schedules synchronously."""

    @classmethod
    def create(cls, context: RunnerContext) -> RunnerExtension | None:
        """The extension for this engine, or None when the feature is off for it."""
        return cls()

    @classmethod
    def step_constraint(cls, config: EngineConfig) -> StepConstraint | None:
        """The scheduler-side rule of this feature, or None (the default): made from the class
        in the engine core's process, whichever process runs the model."""
        return None

    def add_request(self, req_id: str, params: SamplingParams, extensions: ExtensionState) -> None:
        """A request reached the engine core (before it is scheduled)."""

    def is_ready(self, req_id: str) -> bool:
        """False holds the request in the waiting queue (keeping its place) for now."""
        return True

    def finish_requests(self, req_ids: set[str]) -> None:
        """Requests finished or aborted since the last step: drop their state."""

    def prepare_rows(self, rows: Sequence[ScheduledRequest]) -> None:
        """Before the forward pass, with the step's sampling rows."""

    def prepare_step(self, output: SchedulerOutput, inputs: ModelInputs) -> None:
        """Before the forward pass, with every scheduled request (``output.scheduled``, in the
        order of the token rows) and the step's tensors (``inputs``: padded rows past
        ``inputs.num_actual_tokens`` belong to no request)."""

    def allows_graph(self) -> bool:
        """After ``prepare_step``: may this step replay a captured graph (CUDA graph, CPU plan)?
        False runs it eagerly, for a feature whose work the captured graphs do not hold."""
        return True

    def hidden_states_wanted(self) -> tuple[int, ...] | None:
        """None (the default): the extension reads no hidden states. A tuple: it gets every
        step's hidden states (``accept_hidden_states``) and, besides the model's output, the input
        of these decoder layers (empty: the output only). Asked once, when the runner starts."""
        return None

    def accept_hidden_states(self, output: SchedulerOutput, inputs: ModelInputs, hidden: StepHiddenStates) -> None:
        """After the forward pass of every step (before sampling), for an extension whose
        ``hidden_states_wanted`` is not None: the hidden states of all the step's tokens."""

    def prepare_logits(self, token_rows: torch.Tensor) -> None:
        """Before each ``compute_logits`` call of a step (1.3): the hidden rows it is given are
        these rows of the step's tokens (``[n]`` int64 on the device, in order:
        ``inputs.logits_indices`` for the sampled rows, padding included; a contiguous range for
        a slice of prompt logprobs). For a model wrapper whose logits depend on each row's
        request (LoRA on ``lm_head``); a ``compute_logits`` call without it (a draft head
        reusing the target's) should compute the base logits."""

    def logits_mask(self, rows: Sequence[ScheduledRequest], device: torch.device) -> TokenBitmask | None:
        """Allowed tokens of some of ``rows`` (the logits rows of the step, in order), or None."""
        return None

    def accept_tokens(self, rows: Sequence[ScheduledRequest], sampled: SampledTokens) -> None:
        """The tokens each sampling row produced this step (``rows`` aligned with ``sampled``)."""

    def propose_drafts(self, rows: Sequence[ScheduledRequest], sampled: SampledTokens) -> dict[str, list[int]] | None:
        """Draft tokens for the next step of some rows (req_id -> drafts), or None."""
        return None

    def allows_async_step(self, req_ids: Sequence[str]) -> bool:
        """For an extension with ``supports_async_scheduling = False``: may the next step over
        these requests run ahead of its results anyway (the extension will not need its tokens,
        e.g. a proposer that drafts nothing for them)? Asked once per step; default no."""
        return False

    @classmethod
    def allows_async_step_by_config(cls, config: EngineConfig, req_ids: Sequence[str]) -> bool:
        """The part of ``allows_async_step`` that needs no state of the extension, only the
        engine's config: executors whose runners live in other processes (``mp``, ``ray``) ask
        this on the driver instead of a round trip to the workers. Default no."""
        return False

    def draft_probs(self, req_id: str, draft_token_ids: Sequence[int]) -> torch.Tensor | None:
        """The distributions the request's drafts were sampled from ([len(drafts), vocab]
        float32), or None when they were not sampled (deterministic drafts, or not this
        extension's): rejection sampling needs them to keep the target's distribution."""
        return None

    def kv_bytes_per_block(self, block_size: int) -> int:
        """Bytes this extension keeps per block of the model's KV cache (its own cache laid out
        on the same block ids); the cache is sized for the sum."""
        return 0

    def kv_cache_initialized(self, num_blocks: int, block_size: int) -> None:
        """The model's KV cache was allocated with ``num_blocks`` blocks of ``block_size`` tokens
        (before the first step)."""


def step_constraints(config: EngineConfig) -> list[StepConstraint]:
    """The scheduler-side rules of every registered extension that has one for this engine."""
    from vllm_core.plugins import registry

    made = [cls.step_constraint(config) for _, cls in registry.runner_extensions().items()]
    return [c for c in made if c is not None]


class RunnerExtensions:
    """The extensions one runner calls, in registration-name order."""

    def __init__(self, extensions: Sequence[RunnerExtension]) -> None:
        self.items = list(extensions)
        self._by_name = {type(e).name: e for e in self.items}
        self._hidden_readers = [e for e in self.items if e.hidden_states_wanted() is not None]
        self._logits_readers = [e for e in self.items if type(e).prepare_logits is not RunnerExtension.prepare_logits]

    @classmethod
    def create(cls, context: RunnerContext) -> RunnerExtensions:
        """Every registered extension that is on for this engine."""
        from vllm_core.plugins import registry

        made = [ext_cls.create(context) for _, ext_cls in registry.runner_extensions().items()]
        return cls([e for e in made if e is not None])

    def get(self, name: str) -> RunnerExtension | None:
        return self._by_name.get(name)

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    @property
    def supports_async_scheduling(self) -> bool:
        return all(type(e).supports_async_scheduling for e in self.items)

    @property
    def sync_names(self) -> tuple[str, ...]:
        """The extensions that need each step's tokens before the next (step by step)."""
        return tuple(type(e).name for e in self.items if not type(e).supports_async_scheduling)

    def add_request(self, req_id: str, params: SamplingParams, extensions: ExtensionState) -> None:
        for e in self.items:
            e.add_request(req_id, params, extensions)

    def is_ready(self, req_id: str) -> bool:
        return all(e.is_ready(req_id) for e in self.items)

    def finish_requests(self, req_ids: set[str]) -> None:
        if req_ids:
            for e in self.items:
                e.finish_requests(req_ids)

    def prepare_rows(self, rows: Sequence[ScheduledRequest]) -> None:
        for e in self.items:
            e.prepare_rows(rows)

    def prepare_step(self, output: SchedulerOutput, inputs: ModelInputs) -> None:
        for e in self.items:
            e.prepare_step(output, inputs)

    def allows_graph(self) -> bool:
        return all(e.allows_graph() for e in self.items)

    def hidden_states_wanted(self) -> tuple[int, ...] | None:
        """The union of the extensions' wanted layers (sorted), or None when none reads any."""
        wanted = [w for w in (e.hidden_states_wanted() for e in self._hidden_readers) if w is not None]
        if not wanted:
            return None
        return tuple(sorted({i for w in wanted for i in w}))

    def accept_hidden_states(self, output: SchedulerOutput, inputs: ModelInputs, hidden: StepHiddenStates) -> None:
        for e in self._hidden_readers:
            e.accept_hidden_states(output, inputs, hidden)

    @property
    def wants_logits_rows(self) -> bool:
        """Does an extension read which token rows each ``compute_logits`` call gets?"""
        return bool(self._logits_readers)

    def prepare_logits(self, token_rows: torch.Tensor) -> None:
        for e in self._logits_readers:
            e.prepare_logits(token_rows)

    def logits_mask(self, rows: Sequence[ScheduledRequest], device: torch.device) -> TokenBitmask | None:
        masks = [m for m in (e.logits_mask(rows, device) for e in self.items) if m is not None]
        return merge_token_bitmasks(masks)

    def accept_tokens(self, rows: Sequence[ScheduledRequest], sampled: SampledTokens) -> None:
        for e in self.items:
            e.accept_tokens(rows, sampled)

    def allows_async_step(self, req_ids: Sequence[str]) -> bool:
        return all(e.allows_async_step(req_ids) for e in self.items if not type(e).supports_async_scheduling)

    def draft_probs(self, req_id: str, draft_token_ids: Sequence[int]) -> torch.Tensor | None:
        for e in self.items:
            probs = e.draft_probs(req_id, draft_token_ids)
            if probs is not None:
                return probs
        return None

    def kv_bytes_per_block(self, block_size: int) -> int:
        return sum(e.kv_bytes_per_block(block_size) for e in self.items)

    def kv_cache_initialized(self, num_blocks: int, block_size: int) -> None:
        for e in self.items:
            e.kv_cache_initialized(num_blocks, block_size)

    def propose_drafts(self, rows: Sequence[ScheduledRequest], sampled: SampledTokens) -> dict[str, list[int]] | None:
        out: dict[str, list[int]] = {}
        for e in self.items:
            drafts = e.propose_drafts(rows, sampled)
            if drafts:
                out.update(drafts)
        return out or None
