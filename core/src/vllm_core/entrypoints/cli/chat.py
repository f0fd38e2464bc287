"""The interactive ``vllm-core chat`` loop: one engine, tokens printed as they come."""

from __future__ import annotations

from typing import Any

import click


def stream_reply(llm: Any, messages: list[dict[str, str]], params: Any) -> str:
    """Run one chat turn through the engine, echoing text deltas; returns the full reply."""
    from vllm_core.tokenizers.chat import apply_chat_template

    engine = llm.llm_engine
    tok = llm.get_tokenizer()
    text = apply_chat_template(tok, messages)
    rid = engine.next_request_id()
    engine.add_request(rid, {"prompt": text, "prompt_token_ids": tok.encode(text, add_special_tokens=False)}, params)
    shown = ""
    try:
        while engine.has_unfinished_requests():
            for out in engine.step():
                new = out.outputs[0].text
                click.echo(new[len(shown):], nl=False)
                shown = new
    except KeyboardInterrupt:
        engine.abort_request([rid])
        click.echo(" [interrupted]", nl=False)
    click.echo()
    return shown


def run_chat(llm: Any, params: Any, system: str | None) -> None:
    messages: list[dict[str, str]] = []
    if system:
        messages.append({"role": "system", "content": system})
    while True:
        try:
            line = click.prompt(">>>", prompt_suffix=" ", default="", show_default=False)
        except (EOFError, click.Abort):
            break
        if not line.strip():
            break
        messages.append({"role": "user", "content": line})
        reply = stream_reply(llm, messages, params)
        messages.append({"role": "assistant", "content": reply})
