"""Checks of ``SamplingParams`` that need the model: token ids against the vocabulary, logprob
counts against the engine's limit, ``bad_words`` tokenized. Run once per request at admission,
so a bad request raises ``RequestError`` before it reaches the engine core."""

from __future__ import annotations

from typing import Any

from vllm_core.errors import RequestError
from vllm_core.sampling_params import SamplingParams

DEFAULT_MAX_LOGPROBS = 20


def tokenize_bad_words(tokenizer: Any, words: list[str]) -> list[list[int]]:
    """Each word's token ids, alone and after a space (vLLM's rule): a word is banned at the
    start of the text and in the middle of it. The spaced form is kept only when it is a
    different token sequence of the same length."""
    out: list[list[int]] = []
    for word in words:
        plain = list(tokenizer.encode(word.lstrip(), add_special_tokens=False))
        if plain:
            out.append(plain)
        spaced = list(tokenizer.encode(" " + word.lstrip(), add_special_tokens=False))
        if spaced and (not plain or (spaced[0] != plain[0] and len(spaced) == len(plain))):
            out.append(spaced)
    return out


def _check_ids(name: str, ids: list[int], vocab_size: int) -> None:
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise RequestError(
            f"SamplingParams.{name} holds token ids {bad[:5]} outside the vocabulary [0, {vocab_size})"
        )


def check_params_for_model(
    params: SamplingParams,
    vocab_size: int,
    tokenizer: Any,
    max_logprobs: int = DEFAULT_MAX_LOGPROBS,
) -> SamplingParams:
    """The params ready for the engine (a copy holding tokenized bad words when there are any)."""
    if params.logit_bias:
        _check_ids("logit_bias", list(params.logit_bias), vocab_size)
    if params.allowed_token_ids is not None:
        _check_ids("allowed_token_ids", params.allowed_token_ids, vocab_size)
    if params.stop_token_ids:
        _check_ids("stop_token_ids", params.stop_token_ids, vocab_size)
    limit = vocab_size if max_logprobs == -1 else max_logprobs
    for name in ("logprobs", "prompt_logprobs"):
        value = getattr(params, name)
        if value is not None and (value == -1 and max_logprobs != -1 or value > limit):
            raise RequestError(
                f"SamplingParams.{name}={value} exceeds the engine's max_logprobs={max_logprobs}; "
                "ask for fewer or start the engine with a larger max_logprobs (-1: no limit)"
            )
    if params.structured_outputs is not None:
        from vllm_core.sample.structured import check_structured

        check_structured(params.structured_outputs, tokenizer, vocab_size)
    if params.bad_words:
        if tokenizer is None:
            raise RequestError("SamplingParams.bad_words needs a tokenizer (the engine runs without one)")
        ids = tokenize_bad_words(tokenizer, params.bad_words)
        _check_ids("bad_words", [t for seq in ids for t in seq], vocab_size)
        params = params.clone()
        params._bad_words_token_ids = ids
    return params


def truncate_prompt(ids: list[int], truncate: int | None, max_model_len: int) -> list[int]:
    """The last ``truncate`` prompt tokens (-1: the most that leaves room for one new token)."""
    if truncate is None:
        return ids
    if truncate == -1:
        truncate = max_model_len - 1
    elif truncate > max_model_len:
        raise RequestError(
            f"SamplingParams.truncate_prompt_tokens={truncate} is greater than max_model_len={max_model_len}; "
            "choose a smaller value or -1"
        )
    return ids[-truncate:]
