"""Tests for vllm_core.sample.admission through the InputProcessor: the checks of SamplingParams
that need the model (vocabulary, max_logprobs, bad words, prompt truncation)."""

from __future__ import annotations

from typing import Any

import pytest

from vllm_core.engine.input_processor import InputProcessor
from vllm_core.errors import RequestError
from vllm_core.sample.admission import tokenize_bad_words
from vllm_core.sampling_params import SamplingParams

VOCAB = 100


class WordTokenizer:
    """One token per word; a word after a space is a different token (like byte-level BPE)."""

    eos_token_id = 2

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids, pieces = [], text.split(" ")
        for i, piece in enumerate(pieces):
            if piece:
                key = ("Ġ" if i > 0 else "") + piece
                ids.append(self.vocab.setdefault(key, 10 + len(self.vocab)))
        return ids


def processor(tokenizer: Any = None, max_logprobs: int = 20) -> InputProcessor:
    return InputProcessor(tokenizer, max_model_len=32, vocab_size=VOCAB, eos_token_id=2, max_logprobs=max_logprobs)


def admit(params: SamplingParams, ids: list[int] | None = None, **kwargs: Any):  # type: ignore[no-untyped-def]
    return processor(**kwargs).process("r", {"prompt_token_ids": ids or [5, 6, 7]}, params)[1]


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (SamplingParams(logit_bias={100: 1.0}), r"logit_bias holds token ids \[100\] outside the vocabulary \[0, 100\)"),
        (SamplingParams(allowed_token_ids=[3, 250]), r"allowed_token_ids holds token ids \[250\]"),
        (SamplingParams(stop_token_ids=[1000]), r"stop_token_ids holds token ids \[1000\]"),
        (SamplingParams(logprobs=21), "logprobs=21 exceeds the engine's max_logprobs=20"),
        (SamplingParams(prompt_logprobs=-1), "prompt_logprobs=-1 exceeds the engine's max_logprobs=20"),
        (SamplingParams(bad_words=["x"]), "bad_words needs a tokenizer"),
        (SamplingParams(truncate_prompt_tokens=33), "truncate_prompt_tokens=33 is greater than max_model_len=32"),
    ],
)
def test_rejected_at_admission(params: SamplingParams, match: str) -> None:
    with pytest.raises(RequestError, match=match):
        admit(params)


def test_max_logprobs_minus_one_allows_the_whole_vocabulary() -> None:
    assert admit(SamplingParams(logprobs=-1, prompt_logprobs=VOCAB), max_logprobs=-1).sampling_params.logprobs == -1
    with pytest.raises(RequestError, match="exceeds"):
        admit(SamplingParams(logprobs=VOCAB + 1), max_logprobs=-1)


def test_valid_ids_are_admitted_unchanged() -> None:
    params = SamplingParams(logit_bias={99: 1.0}, allowed_token_ids=[0, 99], logprobs=20)
    assert admit(params).sampling_params is params


@pytest.mark.parametrize(("truncate", "expected"), [(None, 40), (5, 5), (40, 40), (-1, 31)])
def test_truncate_prompt_tokens_keeps_the_last_tokens(truncate: int | None, expected: int) -> None:
    ids = list(range(3, 43))
    params = SamplingParams(truncate_prompt_tokens=truncate)
    proc = InputProcessor(None, max_model_len=64 if truncate in (None, 40) else 32, vocab_size=VOCAB, eos_token_id=2)
    got = proc.process("r", {"prompt_token_ids": ids}, params)[1].prompt_token_ids
    assert got == ids[-expected:]


def test_bad_words_are_tokenized_with_and_without_a_leading_space() -> None:
    tok = WordTokenizer()
    ids = tokenize_bad_words(tok, ["foo", " bar baz"])
    assert ids == [[tok.vocab["foo"]], [tok.vocab["Ġfoo"]], [tok.vocab["bar"], tok.vocab["Ġbaz"]],
                   [tok.vocab["Ġbar"], tok.vocab["Ġbaz"]]]
    params = SamplingParams(bad_words=["foo"])
    admitted = admit(params, tokenizer=tok).sampling_params
    assert admitted.bad_words_token_ids == [[tok.vocab["foo"]], [tok.vocab["Ġfoo"]]]
    assert params.bad_words_token_ids is None  # the caller's object is left alone
