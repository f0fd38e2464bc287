"""Engine logprobs (``list[dict[token_id, Logprob]]`` per sample) in OpenAI's two response shapes."""

from __future__ import annotations

from typing import Any

from vllm_core.logprobs import Logprob


def _text(token_id: int, lp: Logprob, tokenizer: Any) -> str:
    if lp.decoded_token is not None:
        return lp.decoded_token
    return tokenizer.decode([token_id]) if tokenizer is not None else f"token_id:{token_id}"


def _top(entry: dict[int, Logprob], n: int) -> list[tuple[int, Logprob]]:
    """The ``n`` most likely tokens at a position (the entry holds the sampled token too)."""
    return sorted(entry.items(), key=lambda kv: -kv[1].logprob)[:n]


def completion_logprobs(token_ids: list[int], logprobs: list[dict[int, Logprob]], tokenizer: Any, num: int,
                        text_offset: int = 0) -> dict[str, Any]:
    """The legacy completions shape: tokens, token_logprobs, top_logprobs, text_offset."""
    tokens, token_lps, tops, offsets = [], [], [], []
    for tid, entry in zip(token_ids, logprobs):
        lp = entry[tid]
        text = _text(tid, lp, tokenizer)
        tokens.append(text)
        token_lps.append(lp.logprob)
        tops.append({_text(t, x, tokenizer): x.logprob for t, x in _top(entry, num)} if num else None)
        offsets.append(text_offset)
        text_offset += len(text)
    return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}


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
