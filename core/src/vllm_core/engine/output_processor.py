"""Engine-core outputs -> ``RequestOutput``: detokenize, stop strings, logprobs, gather the
``n`` / ``best_of`` samples, and shape each output as the request's ``output_kind`` asks.

A stop string can only be seen in text, so when one matches here the sequence is finished
here and its id is returned for the caller to abort in the core (freeing its blocks). While a
sequence runs, the last ``len(longest stop) - 1`` characters are held back from its outputs: they
may turn out to be the start of a stop string that must not be shown.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from vllm_core.engine.core_types import EngineCoreOutput
from vllm_core.logprobs import Logprob, PositionLogprobs, PromptLogprobs, PromptLogprobsChunk, SampleLogprobs
from vllm_core.outputs import CompletionOutput, RequestOutput
from vllm_core.sampling_params import RequestOutputKind, SamplingParams
from vllm_core.tokenizers.detokenizer import IncrementalDetokenizer


def find_stop_string(text: str, new_len: int, stops: list[str]) -> tuple[str, int] | None:
    """First stop string ending inside the last ``new_len`` characters: (stop, its index)."""
    best: tuple[str, int] | None = None
    for stop in stops:
        start = max(0, len(text) - new_len - len(stop) + 1)
        idx = text.find(stop, start)
        if idx != -1 and (best is None or idx < best[1]):
            best = (stop, idx)
    return best


def fan_out(request_id: str, params: SamplingParams) -> list[tuple[str, SamplingParams]]:
    """The engine-core requests behind one user request: ``best_of`` (else ``n``) sequences.

    Sample ``i`` of a seeded request gets ``seed + i``. When ``best_of > n`` the sequences must be
    ranked, so each computes its sampled-token logprobs (``logprobs=0`` if none were asked for).
    """
    num = params.num_sequences
    if num == 1:
        return [(request_id, params)]
    logprobs = params.logprobs
    if num > params.n and logprobs is None:
        logprobs = 0
    return [
        (f"{i}_{request_id}", params.clone(n=1, best_of=None, seed=None if params.seed is None else params.seed + i,
                                           logprobs=logprobs))
        for i in range(num)
    ]


class TokenTexts:
    """Token id -> its text alone (``Logprob.decoded_token``), cached across requests."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self.cache.get(token_id)
        if text is None:
            text = self.cache[token_id] = self.tokenizer.decode([token_id])
        return text


def to_logprob_dict(pos: PositionLogprobs, num: int, texts: TokenTexts | None) -> dict[int, Logprob]:
    """vLLM's per-position dict: the position's token (its own rank) and the top ``num``
    alternatives (ranks 1..num); -1 keeps every alternative sent."""
    n = len(pos.token_ids) - 1 if num == -1 else num
    ranks = itertools.chain((pos.rank,), range(1, n + 1))
    return {
        tok: Logprob(lp, rank, None if texts is None else texts(tok))
        for tok, lp, rank in zip(pos.token_ids[: n + 1], pos.logprobs[: n + 1], ranks)
    }


@dataclass
class SequenceState:
    """One of a request's ``n`` / ``best_of`` samples."""

    index: int
    params: SamplingParams
    detokenizer: IncrementalDetokenizer | None
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    logprobs: SampleLogprobs | None = None
    cumulative_logprob: float | None = None
    sent_tokens: int = 0
    """What DELTA outputs already carried: tokens, characters, logprob positions."""
    sent_text: int = 0

    @property
    def hold_back(self) -> int:
        """Characters not shown yet while running: they may start a stop string."""
        stops = self.params.stop_strings
        if not stops or self.params.include_stop_str_in_output or self.finish_reason is not None:
            return 0
        return max(len(s) for s in stops) - 1

    def completion(self, index: int, delta: bool, with_logprobs: bool) -> CompletionOutput:
        text_end = max(len(self.text) - self.hold_back, self.sent_text)
        t0, c0 = (self.sent_tokens, self.sent_text) if delta else (0, 0)
        if delta:
            self.sent_tokens, self.sent_text = len(self.token_ids), text_end
        logprobs = None
        if with_logprobs and self.logprobs is not None:
            logprobs = self.logprobs[t0:]
        return CompletionOutput(
            index, self.text[c0:text_end], self.token_ids[t0:], self.finish_reason, self.stop_reason,
            self.cumulative_logprob, logprobs,
        )


@dataclass
class RequestState:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: SamplingParams
    """The user's parameters (``n``, ``output_kind``, ``logprobs``), not a child's."""
    sequences: dict[str, SequenceState]
    """Engine-core request id -> sample."""
    num_cached_tokens: int = 0
    prompt_logprobs: PromptLogprobs | None = None
    num_prompt_logprobs: int = 0
    """Prompt positions filled so far (complete at len(prompt) - 1)."""
    prompt_logprobs_sent: bool = False

    @property
    def finished(self) -> bool:
        for s in self.sequences.values():
            if s.finish_reason is None:
                return False
        return True

    @property
    def final_only(self) -> bool:
        """Nothing is shown before the end: FINAL_ONLY, or best_of > n (ranking needs the end)."""
        return self.params.output_kind is RequestOutputKind.FINAL_ONLY or self.params.num_sequences > self.params.n

    def add_prompt_logprobs(self, chunk: PromptLogprobsChunk, texts: TokenTexts | None) -> None:
        if self.prompt_logprobs is None:
            self.prompt_logprobs = [None] * len(self.prompt_token_ids)
        num = self.params.prompt_logprobs
        assert num is not None
        for i, pos in enumerate(chunk.positions, start=chunk.start):
            if self.prompt_logprobs[i] is None:
                self.num_prompt_logprobs += 1
            self.prompt_logprobs[i] = to_logprob_dict(pos, num, texts)

    @property
    def num_output_tokens(self) -> int:
        """Tokens generated so far, every sample counted."""
        return sum(len(s.token_ids) for s in self.sequences.values())

    @property
    def longest_output(self) -> int:
        return max((len(s.token_ids) for s in self.sequences.values()), default=0)

    def output(self, changed: set[int]) -> RequestOutput:
        """The output to show now: every sample (CUMULATIVE), or what changed in ``changed``
        since the last call (DELTA)."""
        delta = self.params.output_kind is RequestOutputKind.DELTA
        with_logprobs = self.params.logprobs is not None
        if len(self.sequences) == 1 and self.params.num_sequences <= self.params.n:
            # The common case (n=1): no ranking, no sorting.
            (only,) = self.sequences.values()
            completions = [only.completion(only.index, delta, with_logprobs)] if not delta or only.index in changed \
                else []
            return self._request_output(completions, delta)
        seqs = list(self.sequences.values())
        if self.params.num_sequences > self.params.n:
            seqs.sort(key=lambda s: -float("inf") if s.cumulative_logprob is None else s.cumulative_logprob,
                      reverse=True)
            completions = [s.completion(i, False, with_logprobs) for i, s in enumerate(seqs[: self.params.n])]
        else:
            seqs.sort(key=lambda s: s.index)
            shown = [s for s in seqs if not delta or s.index in changed]
            completions = [s.completion(s.index, delta, with_logprobs) for s in shown]
        return self._request_output(completions, delta)

    def _request_output(self, completions: list[CompletionOutput], delta: bool) -> RequestOutput:
        prompt_logprobs = None
        if self.prompt_logprobs is not None and not (delta and self.prompt_logprobs_sent) and \
                self.num_prompt_logprobs >= len(self.prompt_token_ids) - 1:
            prompt_logprobs = self.prompt_logprobs
            self.prompt_logprobs_sent = True
        return RequestOutput(
            self.request_id, self.prompt, self.prompt_token_ids, completions, self.finished,
            self.num_cached_tokens, prompt_logprobs=prompt_logprobs,
        )


class OutputProcessor:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.texts = TokenTexts(tokenizer) if tokenizer is not None else None
        self.requests: dict[str, RequestState] = {}
        self.parent_of: dict[str, str] = {}

    def add_request(
        self,
        request_id: str,
        prompt: str | None,
        prompt_token_ids: list[int],
        children: list[tuple[str, SamplingParams]],
        params: SamplingParams | None = None,
    ) -> None:
        """Track a request whose ``children`` (see ``fan_out``) run in the core; ``params`` are the
        user's (default: the first child's, with ``n`` = the number of children)."""
        if params is None:
            params = children[0][1].clone(n=len(children), best_of=None)
        seqs = {}
        for i, (child_id, child) in enumerate(children):
            detok = None
            if self.tokenizer is not None and child.detokenize:
                detok = IncrementalDetokenizer(
                    self.tokenizer, prompt_token_ids, child.skip_special_tokens, child.spaces_between_special_tokens
                )
            seqs[child_id] = SequenceState(i, child, detok)
            self.parent_of[child_id] = request_id
        self.requests[request_id] = RequestState(request_id, prompt, prompt_token_ids, params, seqs)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def abort_request(self, request_id: str) -> list[str]:
        """Forget a request; returns its engine-core ids to abort."""
        state = self.requests.pop(request_id, None)
        if state is None:
            return []
        for child in state.sequences:
            self.parent_of.pop(child, None)
        return [cid for cid, s in state.sequences.items() if s.finish_reason is None]

    def process(self, outputs: list[EngineCoreOutput]) -> tuple[list[RequestOutput], list[str]]:
        """Apply one step's outputs. Returns the requests with something to show and core ids
        to abort."""
        shown, to_abort = self.apply(outputs)
        return [state.output(indices) for state, indices in shown], to_abort

    def apply(self, outputs: list[EngineCoreOutput]) -> tuple[list[tuple[RequestState, set[int]]], list[str]]:
        """Apply one step's outputs to the requests' states without building any output: the
        requests with something to show (finished, or streaming) with the indices of their
        changed samples, and core ids to abort. Finished requests are forgotten here; their state
        is returned for the caller to build the last output from (``RequestState.output``)."""
        changed: dict[str, set[int]] = {}
        to_abort: list[str] = []
        for out in outputs:
            parent = self.parent_of.get(out.request_id)
            if parent is None:
                continue
            state = self.requests[parent]
            seq = state.sequences[out.request_id]
            if out.new_prompt_logprobs is not None and state.params.prompt_logprobs is not None:
                state.add_prompt_logprobs(out.new_prompt_logprobs, self._texts(seq))
            if seq.finish_reason is not None or not (out.new_token_ids or out.finished):
                continue
            state.num_cached_tokens = max(state.num_cached_tokens, out.num_cached_tokens)
            self._append(seq, out)
            if seq.finish_reason is None and out.finished:
                seq.finish_reason, seq.stop_reason = out.finish_reason, out.stop_reason
                if seq.detokenizer is not None:
                    seq.text += seq.detokenizer.flush()
            elif seq.finish_reason is not None and not out.finished:
                to_abort.append(out.request_id)
            indices = changed.get(parent)
            if indices is None:
                changed[parent] = {seq.index}
            else:
                indices.add(seq.index)
        shown = []
        for rid, indices in changed.items():
            state = self.requests[rid]
            finished = state.finished
            if finished or not state.final_only:
                shown.append((state, indices))
            if finished:
                for child in state.sequences:
                    self.parent_of.pop(child, None)
                del self.requests[rid]
        return shown, to_abort

    def _texts(self, seq: SequenceState) -> TokenTexts | None:
        return self.texts if seq.params.detokenize else None

    def _append(self, seq: SequenceState, out: EngineCoreOutput) -> None:
        num_logprobs = seq.params.logprobs
        for i, token in enumerate(out.new_token_ids):
            seq.token_ids.append(token)
            if num_logprobs is not None and out.new_logprobs is not None:
                pos = out.new_logprobs[i]
                seq.cumulative_logprob = (seq.cumulative_logprob or 0.0) + pos.logprobs[0]
                if seq.logprobs is None:
                    seq.logprobs = []
                seq.logprobs.append(to_logprob_dict(pos, num_logprobs, self._texts(seq)))
            if seq.detokenizer is not None:
                delta = seq.detokenizer.add_token(token)
                seq.text += delta
                if self._check_stop_strings(seq, len(delta)):
                    break

    @staticmethod
    def _check_stop_strings(seq: SequenceState, new_len: int) -> bool:
        stops = seq.params.stop_strings
        if not stops or new_len == 0:
            return False
        hit = find_stop_string(seq.text, new_len, stops)
        if hit is None:
            return False
        stop, idx = hit
        seq.text = seq.text[: idx + len(stop)] if seq.params.include_stop_str_in_output else seq.text[:idx]
        seq.finish_reason, seq.stop_reason = "stop", stop
        return True
