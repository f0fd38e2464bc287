"""The reasoning-parser interface: split a model's thinking from its answer, streaming or not."""

from __future__ import annotations

from typing import Any, ClassVar


class ReasoningParser:
    """Text between ``start_token`` and ``end_token`` is reasoning, the rest the answer.

    Registered by name through ``register_reasoning_parsers``. When the output has no end token
    the whole text is reasoning (the chat template opened the thinking block, as DeepSeek-R1's does).
    """

    start_token: ClassVar[str] = "<think>"
    end_token: ClassVar[str] = "</think>"
    needs_special_tokens: ClassVar[bool] = False

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def _strip_start(self, text: str) -> str:
        stripped = text.lstrip()
        return stripped[len(self.start_token):] if stripped.startswith(self.start_token) else text

    def extract_reasoning(self, text: str) -> tuple[str | None, str | None]:
        """(reasoning, content); either is None when empty."""
        body = self._strip_start(text)
        if self.end_token not in body:
            return body or None, None
        reasoning, _, content = body.partition(self.end_token)
        return reasoning or None, content or None


class ReasoningStreamer:
    """Per-choice streaming state: feed the growing text, get (reasoning delta, content so far)."""

    def __init__(self, parser: ReasoningParser) -> None:
        self.parser = parser
        self.reasoning_sent = 0
        self.ended = False

    def feed(self, text: str, finished: bool) -> tuple[str, str]:
        """The new reasoning text, and the whole answer text so far (for the content path)."""
        p = self.parser
        stripped = text.lstrip()
        if not finished and p.start_token.startswith(stripped):
            return "", ""  # maybe still inside "<think>"
        body = p._strip_start(text)
        idx = body.find(p.end_token)
        if idx != -1:
            self.ended = True
            return self._reasoning(body, idx), body[idx + len(p.end_token):]
        hold = 0 if finished else _partial_suffix(body, p.end_token)
        return self._reasoning(body, len(body) - hold), ""

    def _reasoning(self, body: str, end: int) -> str:
        delta = body[self.reasoning_sent:end] if end > self.reasoning_sent else ""
        self.reasoning_sent = max(self.reasoning_sent, end)
        return delta


def _partial_suffix(text: str, token: str) -> int:
    for k in range(min(len(token) - 1, len(text)), 0, -1):
        if text.endswith(token[:k]):
            return k
    return 0
