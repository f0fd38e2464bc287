"""The FastAPI app of ``vllm-core serve``: OpenAI routes, health, metrics, tokenizer routes.

``build_app`` wires an already started ``AsyncLLM`` into an app (tests serve it with uvicorn on a
free port); ``serve`` starts the engine, runs uvicorn and shuts both down on SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, StreamingResponse

from vllm_core import __version__
from vllm_core.engine.async_llm import AsyncLLM
from vllm_core.entrypoints.openai.errors import APIError, error_response, install_error_handlers
from vllm_core.entrypoints.openai.metrics import CONTENT_TYPE, ServerMetrics
from vllm_core.entrypoints.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    DetokenizeRequest,
    TokenizeRequest,
)
from vllm_core.entrypoints.openai.serving_chat import ServingChat, normalize_messages
from vllm_core.entrypoints.openai.serving_completion import ServingCompletion
from vllm_core.entrypoints.openai.serving_engine import ServerSettings, guard_stream
from vllm_core.multimodal.content_parts import ParsedChat
from vllm_core.tokenizers.chat import apply_chat_template

logger = logging.getLogger(__name__)

API_KEY_ENV = "VLLM_CORE_API_KEY"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _respond(result: Any) -> Response:
    if isinstance(result, AsyncIterator):
        return StreamingResponse(guard_stream(result), media_type="text/event-stream", headers=SSE_HEADERS)
    return JSONResponse(result.model_dump())


def build_app(
    engine: AsyncLLM,
    settings: ServerSettings,
    api_key: str | None = None,
    cors: dict[str, list[str]] | None = None,
) -> FastAPI:
    """An app serving ``engine``. ``api_key`` (else ``$VLLM_CORE_API_KEY``) guards every ``/v1`` route."""
    app = FastAPI(title="vllm-core", version=__version__)
    install_error_handlers(app)
    metrics = ServerMetrics(settings.served_model_names[0], engine.max_model_len, _cache_config(engine))
    engine.stat_loggers.append(metrics.observe_finished)
    engine.iteration_loggers.append(metrics.observe_iterations)
    completion = ServingCompletion(engine, settings)
    chat = ServingChat(engine, settings)
    key = api_key or os.environ.get(API_KEY_ENV) or None
    app.state.engine = engine
    app.state.settings = settings
    app.state.metrics = metrics

    if cors is not None:
        app.add_middleware(CORSMiddleware, allow_origins=cors.get("origins", ["*"]),
                           allow_methods=cors.get("methods", ["*"]), allow_headers=cors.get("headers", ["*"]),
                           allow_credentials=True)

    if key:
        expected = f"Bearer {key}".encode()

        @app.middleware("http")
        async def _auth(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
            if request.method != "OPTIONS" and request.url.path.startswith("/v1"):
                given = request.headers.get("authorization", "").encode()
                alt = request.headers.get("x-api-key", "").encode()
                if not (hmac.compare_digest(given, expected) or (alt and hmac.compare_digest(b"Bearer " + alt, expected))):
                    return error_response("Unauthorized: a valid API key is required (Authorization: Bearer KEY)", 401)
            return await call_next(request)

    @app.get("/health")
    async def health() -> Response:
        if not engine.is_running:
            return error_response(f"engine is not running: {engine.dead_reason or 'stopped'}", 503)
        return Response(status_code=200)

    @app.get("/version")
    async def version() -> dict[str, str]:
        return {"version": __version__}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        created = int(time.time())
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": "vllm-core",
             "root": engine.info.model_path, "parent": None, "max_model_len": engine.max_model_len}
            for name in settings.served_model_names
        ]
        data += [
            {"id": m.name, "object": "model", "created": created, "owned_by": "vllm-core", "root": m.root,
             "parent": m.parent, "max_model_len": engine.max_model_len}
            for m in settings.extra_models
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest) -> Response:
        return _respond(await completion.create(req))

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest) -> Response:
        return _respond(await chat.create(req))

    @app.post("/tokenize")
    async def tokenize(req: TokenizeRequest) -> dict[str, Any]:
        completion.check_model(req.model)
        tok = engine.tokenizer
        if tok is None:
            raise APIError("this model has no tokenizer", 400)
        if (req.prompt is None) == (req.messages is None):
            raise APIError("give exactly one of prompt and messages", 400)
        ids = await engine.run_in_tokenizer_thread(_tokenize, tok, req, chat)
        return {"count": len(ids), "max_model_len": engine.max_model_len, "tokens": ids}

    @app.post("/detokenize")
    async def detokenize(req: DetokenizeRequest) -> dict[str, Any]:
        completion.check_model(req.model)
        if engine.tokenizer is None:
            raise APIError("this model has no tokenizer", 400)
        bad = [t for t in req.tokens if not 0 <= t < engine.info.vocab_size]
        if bad:
            raise APIError(f"token ids {bad[:5]} are outside the vocabulary [0, {engine.info.vocab_size})", 400, "tokens")
        return {"prompt": engine.tokenizer.decode(req.tokens)}

    @app.get("/metrics")
    async def prometheus() -> Response:
        stats = await engine.get_stats() if engine.is_running else None
        return Response(metrics.render(stats), media_type=CONTENT_TYPE)

    from vllm_core.entrypoints.openai.serving_messages import add_messages_route

    add_messages_route(app, engine, settings)
    from vllm_core.entrypoints.openai.serving_responses import add_responses_route

    add_responses_route(app, engine, settings)

    from vllm_core.plugins.manager import get_plugin_manager

    get_plugin_manager().hook.register_api_routes(app=app, engine=engine, settings=settings)
    return app


def _cache_config(engine: AsyncLLM) -> dict[str, Any]:
    """``vllm:cache_config_info``'s labels: the cache config and the block count the core chose."""
    values = {k: v for k, v in engine.config.cache.model_dump().items() if v is None or isinstance(v, (str, int, float))}
    return {**values, "num_gpu_blocks": engine.info.num_kv_blocks, "block_size": engine.info.block_size}


def _tokenize(tok: Any, req: TokenizeRequest, chat: ServingChat) -> list[int]:
    if req.messages is not None:
        template = req.chat_template or chat.chat_template
        messages = chat.media.template_messages(ParsedChat(normalize_messages(req.messages)),
                                                template or getattr(tok, "chat_template", None))
        text = apply_chat_template(tok, messages, template,
                                   req.add_generation_prompt)
        return list(tok.encode(text, add_special_tokens=False))
    return list(tok.encode(req.prompt, add_special_tokens=req.add_special_tokens))


GRACEFUL_SHUTDOWN_S = 5
"""On SIGINT/SIGTERM, in-flight requests get this long to finish; then they are aborted."""


def _quiet_server(config: Any) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises a caught SIGINT/SIGTERM after its graceful shutdown, which would kill
        the process before the engine core is shut down; here the signal only stops serving."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True

    return Server(config)


async def serve_app(app: FastAPI, host: str, port: int, on_ready: Callable[[], None] | None = None,
                    log_level: str = "warning") -> None:
    """Run uvicorn until SIGINT/SIGTERM; in-flight streams are ended (aborted) on the way out."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level,
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, lifespan="off")
    server = _quiet_server(config)
    task = asyncio.ensure_future(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if server.started and on_ready is not None:
        on_ready()
    await task
