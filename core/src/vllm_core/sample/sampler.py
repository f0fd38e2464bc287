"""The ``Sampler`` interface and the reference sampler (a batched tensor pipeline).

Pipeline: penalties -> logit_bias / allowed_token_ids / structured-output bitmask / banned tokens
(bad words, min_tokens)
-> temperature -> top-k -> top-p -> min-p -> sample. Greedy rows take the argmax after the
processors (penalties and masks apply to them too) and skip the rest. The order follows
``transformers``: logits processors, then warpers. Sampling draws ``q ~ Exponential(1)`` per
vocabulary entry and takes ``argmax(p / q)`` (equivalent to drawing from ``p``); a seeded
request draws its noise from its own generator, so its tokens do not depend on the batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from vllm_core.sample.logits_processors import apply_allowed_tokens, apply_banned_tokens, apply_logit_bias
from vllm_core.sample.metadata import SamplingMetadata
from vllm_core.sample.penalties import apply_penalties
from vllm_core.sample.rejection import DraftBatch, verify_drafts, verify_greedy
from vllm_core.sample.token_mask import apply_token_bitmask


class Sampler(ABC):
    """Turns the step's logits into token ids. Registered through ``register_samplers``."""

    name: ClassVar[str]
    pads_rows: ClassVar[bool] = False
    """True: with static step shapes the sampler gets the request bucket's rows (logits and
    ``SamplingMetadata`` padded with greedy rows whose tokens are dropped), so a compiled sampler
    sees one shape per bucket (XLA). False: only the real rows (plugin API 1.1)."""

    @abstractmethod
    def __call__(
        self, logits: torch.Tensor, metadata: SamplingMetadata, generator: torch.Generator | None
    ) -> torch.Tensor:
        """logits: [R, vocab] -> token ids [R] int64. ``generator`` serves unseeded rows.

        Must not modify ``logits``: the runner reads raw logprobs from them afterwards."""

    def verify(
        self,
        logits: torch.Tensor,
        metadata: SamplingMetadata,
        drafts: DraftBatch,
        generator: torch.Generator | None = None,
        generators: dict[int, torch.Generator] | None = None,
    ) -> list[list[int]]:
        """Speculative decoding: the accepted tokens of each request (``1 .. k + 1`` of them).

        logits: [sum(k_i + 1), vocab], request ``i``'s ``k_i + 1`` rows in a run (one per draft,
        then the bonus row); ``metadata`` has one row per logits row (the request's settings
        repeated; penalties see the drafts before each row). Greedy requests accept drafts
        equal to the argmax; random ones use rejection sampling, which keeps the target
        distribution (``vllm_core.sample.rejection``). Draws use ``generator``, except those of
        the requests in ``generators`` (request index -> its own seeded generator). Platforms may
        override with a fused kernel."""
        if metadata.all_greedy:  # the argmax is all that matters: no softmax, no draws
            drafts.validate(logits.shape[0], logits.shape[1])
            # widening to float32 changes no value, so without processors the argmax reads the
            # logits as they are (one kernel less on the critical path of a verification step)
            target = apply_logits_processors(logits, metadata) if uses_logits_processors(metadata) else logits
            return verify_greedy(self.argmax(target), drafts)
        probs = self.processed_logits(logits, metadata).softmax(dim=-1)
        rows = torch.tensor([k + 1 for k in drafts.num_drafts], device=logits.device)
        first_rows = torch.cumsum(rows, 0) - rows
        return verify_drafts(probs, drafts, metadata.temperature[first_rows] <= 0, generator, generators)

    def argmax(self, x: torch.Tensor) -> torch.Tensor:
        """[R, vocab] -> [R] int64: each row's first largest entry (a NaN counts as largest), as
        ``torch.argmax``. A platform may override it with a faster kernel of the same result
        (greedy sampling and greedy verification both use it)."""
        return x.argmax(dim=-1)

    def processed_logits(self, logits: torch.Tensor, metadata: SamplingMetadata) -> torch.Tensor:
        """[R, vocab] float32: the logits the sampler draws from (processors, temperature,
        top-k/top-p, min-p), for ``processed_*`` logprobs. Override when sampling differs."""
        return apply_warpers(apply_logits_processors(logits, metadata), metadata)


def uses_logits_processors(metadata: SamplingMetadata) -> bool:
    """Whether ``apply_logits_processors`` changes anything but the dtype for this batch."""
    return (
        metadata.penalties is not None
        or metadata.logit_bias is not None
        or metadata.allowed_tokens is not None
        or metadata.token_bitmask is not None
        or bool(metadata.banned_tokens)
    )


def apply_logits_processors(logits: torch.Tensor, metadata: SamplingMetadata) -> torch.Tensor:
    """Penalties, logit bias, allowed tokens, structured-output bitmask, banned tokens: float32,
    never in place."""
    logits = logits.float()
    if metadata.penalties is not None:
        logits = apply_penalties(logits, metadata.penalties)
    if metadata.logit_bias is not None:
        logits = apply_logit_bias(logits, metadata.logit_bias)
    if metadata.allowed_tokens is not None:
        logits = apply_allowed_tokens(logits, metadata.allowed_tokens)
    if metadata.token_bitmask is not None:
        logits = apply_token_bitmask(logits, metadata.token_bitmask)
    if metadata.banned_tokens:
        logits = apply_banned_tokens(logits, metadata.banned_tokens)
    return logits


def apply_warpers(logits: torch.Tensor, metadata: SamplingMetadata) -> torch.Tensor:
    """Temperature (greedy rows: 1), top-k / top-p, min-p."""
    temp = metadata.temperature
    logits = logits / torch.where(temp > 0, temp, 1.0).unsqueeze(1)
    logits = apply_top_k_top_p(logits, metadata.top_k, metadata.top_p)
    if metadata.min_p is not None:
        logits = apply_min_p(logits, metadata.min_p)
    return logits


def apply_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None) -> torch.Tensor:
    """Mask logits outside the top-k / nucleus to -inf (in place on a sorted copy)."""
    if top_k is None and top_p is None:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    vocab = logits.shape[-1]
    if top_k is not None:
        k = torch.where(top_k > 0, top_k, vocab).clamp(max=vocab)
        ranks = torch.arange(vocab, device=logits.device).unsqueeze(0)
        sorted_logits.masked_fill_(ranks >= k.unsqueeze(1), float("-inf"))
    if top_p is not None:
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the mass strictly before it already reaches top_p (keeps >= 1 token).
        # Rows with top_p = 1 (off) drop nothing: float32 cumsum can reach 1 before the tail.
        before = probs.cumsum(dim=-1) - probs
        p = top_p.unsqueeze(1)
        sorted_logits.masked_fill_((before >= p) & (p < 1.0), float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter_(-1, order, sorted_logits)


def apply_min_p(logits: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    probs = logits.softmax(dim=-1)
    threshold = probs.amax(dim=-1, keepdim=True) * min_p.unsqueeze(1)
    return logits.masked_fill(probs < threshold, float("-inf"))


def exponential_noise(probs: torch.Tensor, metadata: SamplingMetadata, generator: torch.Generator | None) -> torch.Tensor:
    q = torch.empty_like(probs)
    q.exponential_(generator=generator)
    for row, gen in metadata.generators.items():
        q[row].exponential_(generator=gen)
    return q


class ReferenceSampler(Sampler):
    """Plain PyTorch; the oracle of every platform's sampler."""

    name: ClassVar[str] = "reference"

    def __call__(
        self, logits: torch.Tensor, metadata: SamplingMetadata, generator: torch.Generator | None
    ) -> torch.Tensor:
        logits = apply_logits_processors(logits, metadata)
        greedy = self.argmax(logits)
        if metadata.all_greedy:
            return greedy
        probs = apply_warpers(logits, metadata).softmax(dim=-1)
        sampled = self.argmax(probs / exponential_noise(probs, metadata, generator))
        if metadata.all_random:
            return sampled
        return torch.where(metadata.temperature > 0, sampled, greedy)
