"""Chat templates: conversations to prompt text with the model's (or a given) template."""

from __future__ import annotations

import json
import os
from typing import Any

from vllm_core.errors import RequestError

VALID_ROLES = ("system", "user", "assistant", "tool", "developer")


def validate_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise RequestError(f"messages[{i}] must be a dict with a 'role', got {m!r}")
        if m["role"] not in VALID_ROLES:
            raise RequestError(f"messages[{i}].role {m['role']!r} is invalid; choices: {', '.join(VALID_ROLES)}")
    return messages


def processor_chat_template(model_path: str | None) -> str | None:
    """The chat template a model directory keeps for its processor in the legacy
    ``chat_template.json`` (vision-language checkpoints such as llava-hf's), which tokenizers do
    not read; as vLLM, it wins over the tokenizer's. None: no such file."""
    path = os.path.join(model_path, "chat_template.json") if model_path and os.path.isdir(model_path) else None
    if path is None or not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            template = json.load(f).get("chat_template")
    except (OSError, ValueError, AttributeError):
        return None
    return template if isinstance(template, str) and template else None


def apply_chat_template(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    chat_template: str | None = None,
    add_generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
    **kwargs: Any,
) -> str:
    """Render ``messages`` into the prompt text the model was trained on."""
    validate_messages(messages)
    if tokenizer is None:
        raise RequestError("chat needs a tokenizer; the engine was started with skip_tokenizer_init")
    if chat_template is None and not getattr(tokenizer, "chat_template", None):
        raise RequestError(
            "the model has no chat template; pass chat_template=<jinja text> (or --chat-template FILE)"
        )
    return tokenizer.apply_chat_template(
        messages,
        chat_template=chat_template,
        add_generation_prompt=add_generation_prompt,
        tokenize=False,
        tools=tools,
        **kwargs,
    )
