"""The completion stream's per-token chunk from its template is byte for byte the chunk the
response model would write (pydantic's ``model_dump_json``): field order, compact separators,
escapes, non-ASCII kept."""

from __future__ import annotations

import json

import pytest

from vllm_core.entrypoints.openai.protocol import CompletionChoice, CompletionResponse
from vllm_core.entrypoints.openai.serving_completion import ChunkTemplate
from vllm_core.entrypoints.openai.serving_engine import sse


@pytest.mark.parametrize(("text", "token_ids"), [
    ("hello", [1, 2, 3]),
    ('quote " backslash \\ newline \n tab \t', [7]),
    ("non-ASCII é ✓ 🙂, control \x01, separator \u2028", None),
    ("", []),
])
def test_template_chunk_equals_the_models_json(text: str, token_ids: list[int] | None) -> None:
    head = {"id": 'cmpl-"1"', "object": "text_completion", "created": 1700000000, "model": "modèle"}
    expected = sse(CompletionResponse(
        **head, choices=[CompletionChoice(index=2, text=text, logprobs=None, finish_reason=None, token_ids=token_ids)],
        usage=None,
    ))
    got = ChunkTemplate(head).render(2, text, token_ids)
    assert got == expected
    assert json.loads(got[len("data: "):])["choices"][0]["text"] == text
