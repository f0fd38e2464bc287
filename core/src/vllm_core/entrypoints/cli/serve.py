"""``vllm-core serve [MODEL]``: the OpenAI-compatible server, with vLLM's flag names."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from vllm_core.entrypoints.cli.options import _json_option, engine_keys, engine_options

T = TypeVar("T")

logger = logging.getLogger("vllm_core.serve")


def load_tool_parser_plugin(path: str) -> None:
    """Import a user's file that implements ``register_tool_parsers`` (and any other hook) and
    register it as an in-process plugin."""
    from vllm_core.plugins.manager import register_plugin

    if not os.path.isfile(path):
        raise click.BadParameter(f"{path!r} is not a file", param_hint="--tool-parser-plugin")
    spec = importlib.util.spec_from_file_location(f"vllm_core_user_plugin_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise click.BadParameter(f"cannot import {path!r}", param_hint="--tool-parser-plugin")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    register_plugin(module, name=f"user:{path}")


def read_chat_template(value: str | None) -> str | None:
    """A file path or the template text itself (as vLLM accepts)."""
    if value is None:
        return None
    if os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            return f.read()
    if "{%" in value or "{{" in value:
        return value
    raise click.BadParameter(f"{value!r} is neither a file nor a Jinja template", param_hint="--chat-template")


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (the server extra), else asyncio's. uvicorn only
    picks uvloop for a loop it creates itself; the server's loop is made here, so it asks for it."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_event_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on ``event_loop_factory()``'s loop: uvloop's C loop and transports
    instead of asyncio's selector loop under every streamed event (vLLM's server runs on uvloop too)."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(main)


async def run_server(model: str | None, engine_kwargs: dict[str, Any], host: str, port: int,
                     api_key: str | None, settings_kwargs: dict[str, Any], served: tuple[str, ...],
                     cors: dict[str, list[str]] | None, uvicorn_log_level: str) -> None:
    from vllm_core.engine.async_llm import AsyncLLM
    from vllm_core.engine.engine_core import freeze_startup_heap
    from vllm_core.entrypoints.llm import build_engine_config
    from vllm_core.entrypoints.openai.api_server import build_app, serve_app
    from vllm_core.entrypoints.openai.serving_engine import ServerSettings

    config = build_engine_config(model, **engine_kwargs)
    engine = await AsyncLLM.create(config)
    try:
        names = served or (model or "SmolLM2-135M-Instruct",)
        app = build_app(engine, ServerSettings(served_model_names=names, **settings_kwargs), api_key, cors)
        # as the core process does: the start-up heap (torch, the tokenizer, the app) leaves the
        # collector's view, so collections while streaming scan only what serving allocates
        freeze_startup_heap()
        url = f"http://{host}:{port}"

        def ready() -> None:
            msg = f"vllm-core serving {names[0]} at {url} (OpenAI API at {url}/v1)"
            logger.warning(msg)
            click.echo(msg, err=True)

        await serve_app(app, host, port, ready, uvicorn_log_level)
    finally:
        await engine.shutdown()
        click.echo("vllm-core server stopped", err=True)


def _serve_engine_options(f: Any) -> Any:
    """The shared engine flags plus ``--enforce-eager`` and ``--limit-mm-per-prompt`` (unless the
    shared flags, which include the plugins' engine arguments, already have them)."""
    f = engine_options(f)
    names = {p.name for p in getattr(f, "__click_params__", [])}
    if "enforce_eager" not in names:
        f = click.option("--enforce-eager", is_flag=True, default=False, help="Never replay captured graphs.")(f)
    if "limit_mm_per_prompt" not in names:
        f = click.option("--limit-mm-per-prompt", default=None, callback=_json_option,
                         help='Most items per prompt of each modality as JSON, e.g. \'{"image": 2}\'.')(f)
    return f


def limit_mm_per_prompt(value: Any) -> dict[str, int] | None:
    """``--limit-mm-per-prompt``'s value as ``{"image": 2}``: counts must be whole numbers >= 0."""
    if value is None:
        return None
    if isinstance(value, str):
        value = _json_option(None, None, value)  # type: ignore[arg-type]
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0 for k, v in value.items()):
        raise click.BadParameter(f"must map modalities to counts >= 0, e.g. '{{\"image\": 2}}', got {value!r}",
                                 param_hint="--limit-mm-per-prompt")
    return dict(value)


@click.command()
@click.argument("model_arg", metavar="[MODEL]", required=False)
@_serve_engine_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--api-key", default=None, help="Require 'Authorization: Bearer KEY' on /v1 (also $VLLM_CORE_API_KEY).")
@click.option("--served-model-name", multiple=True, help="Name(s) clients use for the model (default: MODEL).")
@click.option("--chat-template", default=None, help="Jinja chat template file (or text) instead of the model's.")
@click.option("--enable-auto-tool-choice", is_flag=True, help="Parse tool calls when tool_choice is auto.")
@click.option("--tool-call-parser", default=None, help="Registered tool parser: hermes, llama3_json, mistral, pythonic, ...")
@click.option("--tool-parser-plugin", default=None, help="Python file registering more tool parsers (a hook plugin).")
@click.option("--reasoning-parser", default=None, help="Registered reasoning parser, e.g. deepseek_r1.")
@click.option("--max-pending-requests", type=click.IntRange(min=1), default=None,
              help="Requests in flight before new ones get 429 (default: 8 x --max-num-seqs).")
@click.option("--allowed-origins", multiple=True, help="CORS origins (repeatable; default none).")
@click.option("--allowed-methods", multiple=True, help="CORS methods (default *).")
@click.option("--allowed-headers", multiple=True, help="CORS headers (default *).")
@click.option("--allowed-local-media-path", default=None, type=click.Path(exists=True, file_okay=False, resolve_path=True),
              help="Directory that file:// image URLs may read under (default: file:// URLs are refused).")
@click.option("--image-fetch-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds an http(s):// image may take (default: $VLLM_IMAGE_FETCH_TIMEOUT or 5).")
@click.option("--image-fetch-max-bytes", type=click.IntRange(min=1), default=None,
              help="Largest image accepted, in bytes (default: $VLLM_IMAGE_FETCH_MAX_BYTES or 20 MiB).")
@click.option("--allowed-media-domains", multiple=True,
              help="Only hosts http(s):// image URLs may name (repeatable; redirects are then not followed).")
@click.option("--uvicorn-log-level", default="warning", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug", "trace"]))
def serve(model_arg: str | None, model: str | None, host: str, port: int, api_key: str | None,
          served_model_name: tuple[str, ...], chat_template: str | None, enable_auto_tool_choice: bool,
          tool_call_parser: str | None, tool_parser_plugin: str | None, reasoning_parser: str | None,
          max_pending_requests: int | None, allowed_origins: tuple[str, ...], allowed_methods: tuple[str, ...],
          allowed_headers: tuple[str, ...], allowed_local_media_path: str | None, image_fetch_timeout: float | None,
          image_fetch_max_bytes: int | None, allowed_media_domains: tuple[str, ...], uvicorn_log_level: str,
          **kwargs: Any) -> None:
    """Serve MODEL (default: the embedded SmolLM2-135M-Instruct) over the OpenAI API."""
    from vllm_core.errors import EngineError
    from vllm_core.plugins import registry

    if model_arg and model and model_arg != model:
        raise click.UsageError(f"MODEL {model_arg!r} and --model {model!r} disagree; give one")
    model = model_arg or model
    if enable_auto_tool_choice and not tool_call_parser:
        raise click.UsageError("--enable-auto-tool-choice needs --tool-call-parser")
    engine_kwargs = {k: kwargs.pop(k) for k in engine_keys() if k in kwargs}
    if kwargs.pop("enforce_eager", False):
        engine_kwargs["enforce_eager"] = True
    mm_limit = limit_mm_per_prompt(engine_kwargs.pop("limit_mm_per_prompt", kwargs.pop("limit_mm_per_prompt", None)))
    if mm_limit is not None:
        engine_kwargs["limit_mm_per_prompt"] = mm_limit
    try:
        if tool_parser_plugin:
            load_tool_parser_plugin(tool_parser_plugin)
        if tool_call_parser:
            registry.tool_parsers().get(tool_call_parser)
        if reasoning_parser:
            registry.reasoning_parsers().get(reasoning_parser)
    except EngineError as exc:
        raise click.ClickException(str(exc)) from exc
    settings = {
        "chat_template": read_chat_template(chat_template),
        "enable_auto_tool_choice": enable_auto_tool_choice,
        "tool_call_parser": tool_call_parser,
        "reasoning_parser": reasoning_parser,
        "max_pending_requests": max_pending_requests,
        "allowed_local_media_path": allowed_local_media_path,
        "image_fetch_timeout": image_fetch_timeout,
        "image_fetch_max_bytes": image_fetch_max_bytes,
        "allowed_media_domains": tuple(allowed_media_domains) or None,
    }
    cors = None
    if allowed_origins:
        cors = {"origins": list(allowed_origins), "methods": list(allowed_methods) or ["*"],
                "headers": list(allowed_headers) or ["*"]}
    try:
        run_event_loop(run_server(model, engine_kwargs, host, port, api_key, settings, served_model_name, cors,
                                  uvicorn_log_level))
    except EngineError as exc:
        raise click.ClickException(str(exc)) from exc
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
