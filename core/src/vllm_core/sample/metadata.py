"""``SamplingMetadata``: the sampling settings of one step's rows, as tensors.

``build`` is the only per-request Python of the sampling path: it turns the step's rows into a
few tensors (left out entirely when no row uses a feature), and the sampler then works on the
whole batch at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vllm_core.core.sched_output import ScheduledRequest
from vllm_core.sample.token_mask import TokenBitmask
from vllm_core.worker.transfer import to_device

PAD_TOKEN = -1
"""Fills the ragged token-id tensors; the processors map it to a scratch column."""


@dataclass
class PenaltyTensors:
    """Repetition, frequency and presence penalties of the rows (1 / 0 / 0 where unused)."""

    repetition: torch.Tensor
    """[R] float32"""
    frequency: torch.Tensor
    """[R] float32"""
    presence: torch.Tensor
    """[R] float32"""
    output_ids: torch.Tensor
    """[R, max_output_len] int64, PAD_TOKEN-padded: tokens generated so far."""
    prompt_ids: torch.Tensor | None
    """[R, max_prompt_len] int64, PAD_TOKEN-padded; None when no row has a repetition penalty."""


@dataclass
class TokenIndex:
    """Sparse (row, token) pairs with an optional value each."""

    rows: torch.Tensor
    """[K] int64"""
    tokens: torch.Tensor
    """[K] int64"""
    values: torch.Tensor | None = None
    """[K] float32"""


@dataclass
class SamplingMetadata:
    """One row per request that samples this step."""

    temperature: torch.Tensor
    """[R] float32; 0 for greedy rows."""
    top_k: torch.Tensor | None
    """[R] int64, 0 = off; None when no row uses it."""
    top_p: torch.Tensor | None
    """[R] float32, 1 = off; None when no row uses it."""
    min_p: torch.Tensor | None
    """[R] float32, 0 = off; None when no row uses it."""
    all_greedy: bool
    all_random: bool
    generators: dict[int, torch.Generator]
    """Row -> the request's own generator (seeded requests)."""
    banned_tokens: list[tuple[int, list[int]]]
    """(row, token ids) masked to -inf: EOS / stop ids before ``min_tokens`` is reached, and the
    last token of every bad word whose other tokens end the output."""
    penalties: PenaltyTensors | None = None
    logit_bias: TokenIndex | None = None
    """Values added to the logits."""
    allowed_tokens: TokenIndex | None = None
    """The only tokens their rows may produce (rows without ``allowed_token_ids`` are absent)."""
    max_num_logprobs: int | None = None
    """Most top-k alternatives any row asks for (-1: the vocabulary); None when no row does."""
    token_bitmask: TokenBitmask | None = None
    """Allowed tokens of some rows (set by the runner from its extensions' ``logits_mask``)."""

    @classmethod
    def build(
        cls,
        rows: Sequence[ScheduledRequest],
        generators: dict[int, torch.Generator],
        device: torch.device,
        pending: Callable[[str], list[int]] | None = None,
    ) -> SamplingMetadata:
        """``pending(req_id)``: the tokens of a request sampled by the step still in flight (async
        scheduling), not yet in its ``output_token_ids``; asked only for rows whose penalties or
        bad words need the whole output."""
        params = [r.sampling_params for r in rows]
        outputs = _outputs(rows, pending)
        temps = [0.0 if p.is_greedy else float(p.temperature) for p in params]
        greedy = [t == 0.0 for t in temps]
        top_k = [p.top_k for p in params]
        top_p = [p.top_p for p in params]
        min_p = [p.min_p for p in params]
        banned = _banned_tokens(rows, outputs)
        logprobs = [p.logprobs for p in params if p.logprobs is not None]
        return cls(
            temperature=to_device(torch.tensor(temps, dtype=torch.float32), device),
            top_k=to_device(torch.tensor(top_k, dtype=torch.int64), device) if any(top_k) else None,
            top_p=to_device(torch.tensor(top_p, dtype=torch.float32), device) if any(p < 1.0 for p in top_p) else None,
            min_p=to_device(torch.tensor(min_p, dtype=torch.float32), device) if any(min_p) else None,
            all_greedy=all(greedy),
            all_random=not any(greedy),
            generators=generators,
            banned_tokens=banned,
            penalties=_penalties(rows, outputs, device) if any(p.has_penalties for p in params) else None,
            logit_bias=_logit_bias(rows, device),
            allowed_tokens=_allowed_tokens(rows, device),
            max_num_logprobs=(-1 if -1 in logprobs else max(logprobs)) if logprobs else None,
        )


def _outputs(rows: Sequence[ScheduledRequest], pending: Callable[[str], list[int]] | None) -> list[Sequence[int]]:
    """Each row's generated tokens, completed with the ones in flight where they matter."""
    outputs: list[Sequence[int]] = []
    for r in rows:
        out: Sequence[int] = r.output_token_ids
        missing = r.num_output_tokens - len(out)
        p = r.sampling_params
        if missing > 0 and pending is not None and (p.has_penalties or p.bad_words_token_ids):
            out = [*out, *pending(r.req_id)[-missing:]]
        outputs.append(out)
    return outputs


def _banned_tokens(rows: Sequence[ScheduledRequest], outputs: list[Sequence[int]]) -> list[tuple[int, list[int]]]:
    banned = []
    for i, r in enumerate(rows):
        p = r.sampling_params
        ids: list[int] = []
        if r.num_output_tokens < p.min_tokens:
            ids.extend(p.stop_token_ids or ())
            if r.eos_token_id is not None and not p.ignore_eos:
                ids.append(r.eos_token_id)
        if p.bad_words_token_ids:
            ids.extend(_bad_word_bans(p.bad_words_token_ids, outputs[i]))
        if ids:
            banned.append((i, ids))
    return banned


def _bad_word_bans(words: list[list[int]], output: Sequence[int]) -> list[int]:
    """Last tokens of the words whose other tokens end ``output`` (vLLM's rule: only the output
    counts, not the prompt)."""
    out = []
    n = len(output)
    for word in words:
        prefix = len(word) - 1
        if prefix == 0 or (prefix <= n and list(output[n - prefix :]) == word[:-1]):
            out.append(word[-1])
    return out


def _padded(seqs: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    width = max((len(s) for s in seqs), default=0)
    out = np.full((len(seqs), max(width, 1)), PAD_TOKEN, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return torch.from_numpy(out).to(device)


def _penalties(rows: Sequence[ScheduledRequest], all_outputs: list[Sequence[int]], device: torch.device) -> PenaltyTensors:
    params = [r.sampling_params for r in rows]
    uses = [p.has_penalties for p in params]
    repetition = [p.repetition_penalty for p in params]
    # Rows without penalties contribute no tokens: their ids would only cost memory.
    outputs = [out if u else () for out, u in zip(all_outputs, uses)]
    prompt_ids = None
    if any(rp != 1.0 for rp in repetition):
        prompt_ids = _padded([r.prompt_token_ids if rp != 1.0 else () for r, rp in zip(rows, repetition)], device)

    def f32(values: list[float]) -> torch.Tensor:
        return to_device(torch.tensor(values, dtype=torch.float32), device)

    return PenaltyTensors(
        repetition=f32(repetition),
        frequency=f32([p.frequency_penalty for p in params]),
        presence=f32([p.presence_penalty for p in params]),
        output_ids=_padded(outputs, device),
        prompt_ids=prompt_ids,
    )


def _logit_bias(rows: Sequence[ScheduledRequest], device: torch.device) -> TokenIndex | None:
    entries = [(i, t, b) for i, r in enumerate(rows) for t, b in (r.sampling_params.logit_bias or {}).items()]
    if not entries:
        return None
    r_, t_, b_ = zip(*entries)
    return TokenIndex(
        to_device(torch.tensor(r_, dtype=torch.int64), device),
        to_device(torch.tensor(t_, dtype=torch.int64), device),
        to_device(torch.tensor(b_, dtype=torch.float32), device),
    )


def _allowed_tokens(rows: Sequence[ScheduledRequest], device: torch.device) -> TokenIndex | None:
    entries = [(i, t) for i, r in enumerate(rows) for t in (r.sampling_params.allowed_token_ids or ())]
    if not entries:
        return None
    r_, t_ = zip(*entries)
    return TokenIndex(to_device(torch.tensor(r_, dtype=torch.int64), device), to_device(torch.tensor(t_, dtype=torch.int64), device))
