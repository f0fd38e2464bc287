"""Incremental detokenization that never emits half a character.

Byte-level BPE splits one UTF-8 character (an emoji, a CJK glyph) over several tokens; decoding
a prefix of them yields U+FFFD. We decode a short window ``ids[prefix_offset:]`` and compare it
with ``ids[prefix_offset:read_offset]``; the new text is emitted only once it no longer ends in
U+FFFD, and the window then slides forward. Decoding a window (not only the new token) keeps
tokenizer-dependent spacing right.
"""

from __future__ import annotations

from typing import Any

REPLACEMENT = "\ufffd"
# Prompt tokens kept in the first window, so the first output token decodes in context.
_CONTEXT_TOKENS = 5


class IncrementalDetokenizer:
    """Turns one sequence's output tokens into text, a delta at a time."""

    def __init__(
        self,
        tokenizer: Any,
        prompt_token_ids: list[int],
        skip_special_tokens: bool = True,
        spaces_between_special_tokens: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        # Only slow (Python) tokenizers distinguish it; fast ones ignore the option, as in vLLM.
        self._decode_kwargs = {} if spaces_between_special_tokens else {"spaces_between_special_tokens": False}
        context = prompt_token_ids[-_CONTEXT_TOKENS:]
        self.ids: list[int] = list(context)
        self.prefix_offset = 0
        self.read_offset = len(context)
        self.text = ""

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens, **self._decode_kwargs)

    def add_token(self, token_id: int) -> str:
        """Append one token; return the text it completes (possibly empty)."""
        self.ids.append(token_id)
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.ids[self.prefix_offset :])
        if len(full) > len(prefix) and not full.endswith(REPLACEMENT):
            delta = full[len(prefix) :]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            self.text += delta
            return delta
        return ""

    def flush(self) -> str:
        """At the end of a sequence: whatever is still held back (an incomplete character)."""
        prefix = self._decode(self.ids[self.prefix_offset : self.read_offset])
        full = self._decode(self.ids[self.prefix_offset :])
        delta = full[len(prefix) :] if len(full) > len(prefix) else ""
        self.prefix_offset = self.read_offset = len(self.ids)
        self.text += delta
        return delta
