"""Engine logprobs (``list[dict[token_id, Logprob]]`` per sample) in OpenAI's two response shapes,
and prompt logprobs in vLLM's (``prompt_logprobs``: per prompt token, the first null).

JSON has no infinity: a ``-inf`` logprob is sent as ``-9999.0``, as vLLM does."""

from __future__ import annotations

from typing import Any

from vllm_core.logprobs import Logprob, PromptLogprobs

FLOOR = -9999.0
"""What ``-inf`` (a token the sampler could never pick) is sent as."""


def _finite(x: float) -> float:
    return max(x, FLOOR)


def _text(token_id: int, lp: Logprob, tokenizer: Any) -> str:
    if lp.decoded_token is not None:
        return lp.decoded_token
    return tokenizer.decode([token_id]) if tokenizer is not None else f"token_id:{token_id}"


def _top(entry: dict[int, Logprob], n: int) -> list[tuple[int, Logprob]]:
    """The ``n`` most likely tokens at a position (the entry holds the sampled token too)."""
    return sorted(entry.items(), key=lambda kv: -kv[1].logprob)[:n]


def completion_logprobs(token_ids: list[int], logprobs: list[dict[int, Logprob] | None], tokenizer: Any, num: int,
                        text_offset: int = 0) -> dict[str, Any]:
    """The legacy completions shape: tokens, token_logprobs, top_logprobs, text_offset. A position
    without logprobs (the first prompt token under ``echo``) has null ones."""
    tokens: list[str] = []
    token_lps: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    for tid, entry in zip(token_ids, logprobs):
        if entry is None:
            text = tokenizer.decode([tid]) if tokenizer is not None else f"token_id:{tid}"
            token_lps.append(None)
            tops.append(None)
        else:
            lp = entry[tid]
            text = _text(tid, lp, tokenizer)
            token_lps.append(_finite(lp.logprob))
            tops.append({_text(t, x, tokenizer): _finite(x.logprob) for t, x in _top(entry, num)} if num else None)
        tokens.append(text)
        offsets.append(text_offset)
        text_offset += len(text)
    return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}


def prompt_logprobs_json(plp: PromptLogprobs | None) -> list[dict[str, dict[str, Any]] | None] | None:
    """vLLM's ``prompt_logprobs`` field: per prompt token ``{token_id: {logprob, rank, decoded_token}}``."""
    if plp is None:
        return None
    return [
        None if entry is None else {
            str(t): {"logprob": _finite(x.logprob), "rank": x.rank, "decoded_token": x.decoded_token}
            for t, x in entry.items()
        }
        for entry in plp
    ]


def chat_logprobs(token_ids: list[int], logprobs: list[dict[int, Logprob]], tokenizer: Any, top: int) -> dict[str, Any]:
    """The chat shape: ``{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}``."""
    content = []
    for tid, entry in zip(token_ids, logprobs):
        lp = entry[tid]
        text = _text(tid, lp, tokenizer)
        content.append({
            "token": text, "logprob": lp.logprob, "bytes": list(text.encode()),
            "top_logprobs": [
                {"token": (s := _text(t, x, tokenizer)), "logprob": x.logprob, "bytes": list(s.encode())}
                for t, x in _top(entry, top)
            ],
        })
    return {"content": content}
