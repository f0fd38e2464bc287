"""Engine-core outputs -> ``RequestOutput``: detokenize, stop strings, gather ``n`` samples.

A stop string can only be seen in text, so when one matches here the sequence is finished
here and its id is returned for the caller to abort in the core (freeing its blocks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vllm_core.engine.core_types import EngineCoreOutput
from vllm_core.outputs import CompletionOutput, RequestOutput
from vllm_core.sampling_params import SamplingParams
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


@dataclass
class SequenceState:
    """One of a request's ``n`` samples."""

    index: int
    params: SamplingParams
    detokenizer: IncrementalDetokenizer | None
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    stop_reason: int | str | None = None

    def completion(self) -> CompletionOutput:
        return CompletionOutput(
            self.index, self.text, list(self.token_ids), self.finish_reason, self.stop_reason
        )


@dataclass
class RequestState:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    sequences: dict[str, SequenceState]
    """Engine-core request id -> sample."""
    num_cached_tokens: int = 0

    @property
    def finished(self) -> bool:
        return all(s.finish_reason is not None for s in self.sequences.values())

    def output(self) -> RequestOutput:
        seqs = sorted(self.sequences.values(), key=lambda s: s.index)
        return RequestOutput(
            self.request_id, self.prompt, self.prompt_token_ids,
            [s.completion() for s in seqs], self.finished, self.num_cached_tokens,
        )


class OutputProcessor:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.requests: dict[str, RequestState] = {}
        self.parent_of: dict[str, str] = {}

    def add_request(
        self,
        request_id: str,
        prompt: str | None,
        prompt_token_ids: list[int],
        children: list[tuple[str, SamplingParams]],
    ) -> None:
        seqs = {}
        for i, (child_id, params) in enumerate(children):
            detok = None
            if self.tokenizer is not None and params.detokenize:
                detok = IncrementalDetokenizer(self.tokenizer, prompt_token_ids, params.skip_special_tokens)
            seqs[child_id] = SequenceState(i, params, detok)
            self.parent_of[child_id] = request_id
        self.requests[request_id] = RequestState(request_id, prompt, prompt_token_ids, seqs)

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
        """Apply one step's outputs. Returns the changed requests and core ids to abort."""
        changed: dict[str, RequestState] = {}
        to_abort: list[str] = []
        for out in outputs:
            parent = self.parent_of.get(out.request_id)
            if parent is None:
                continue
            state = self.requests[parent]
            seq = state.sequences[out.request_id]
            if seq.finish_reason is not None:
                continue
            state.num_cached_tokens = max(state.num_cached_tokens, out.num_cached_tokens)
            for token in out.new_token_ids:
                seq.token_ids.append(token)
                if seq.detokenizer is not None:
                    delta = seq.detokenizer.add_token(token)
                    seq.text += delta
                    if self._check_stop_strings(seq, len(delta)):
                        break
            if seq.finish_reason is None and out.finished:
                seq.finish_reason, seq.stop_reason = out.finish_reason, out.stop_reason
                if seq.detokenizer is not None:
                    seq.text += seq.detokenizer.flush()
            elif seq.finish_reason is not None and not out.finished:
                to_abort.append(out.request_id)
            changed[parent] = state
        results = []
        for rid, state in changed.items():
            results.append(state.output())
            if state.finished:
                for child in state.sequences:
                    self.parent_of.pop(child, None)
                del self.requests[rid]
        return results, to_abort

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
