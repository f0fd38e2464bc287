"""OpenAI's error body for every failure: ``{"error": {"message", "type", "param", "code"}}``
(Anthropic's ``{"type": "error", "error": {"type", "message"}}`` on ``/v1/messages``).

A request the client got wrong is a 4xx; only a bug of ours is a 500, and a dead engine a 503.

Every error raised by a route becomes a response inside the route (``routing.HandledRoute``),
never in Starlette's ``ServerErrorMiddleware``, which answers and then re-raises (uvicorn logs a
traceback and drops the keep-alive connection).
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from vllm_core.engine.core_client import EngineDeadError
from vllm_core.entrypoints.openai.protocol import ErrorInfo, ErrorResponse
from vllm_core.errors import RequestError

logger = logging.getLogger(__name__)

_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    404: "NotFoundError",
    405: "MethodNotAllowedError",
    413: "RequestTooLargeError",
    422: "BadRequestError",
    429: "RateLimitError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


class APIError(Exception):
    """An error with its HTTP status, raised by the serving code."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param


def error_body(message: str, status: int, param: str | None = None) -> dict[str, Any]:
    err_type = _TYPES.get(status) or HTTPStatus(status).phrase.replace(" ", "") + "Error"
    return ErrorResponse(error=ErrorInfo(message=message, type=err_type, param=param, code=status)).model_dump()


def error_response(message: str, status: int, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, status, param), status_code=status)


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
}


def anthropic_error_body(message: str, status: int) -> dict[str, Any]:
    """Anthropic's error shape: ``{"type": "error", "error": {"type": ..., "message": ...}}``."""
    kind = _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def _is_anthropic(request: Request) -> bool:
    return request.url.path.startswith("/v1/messages")


def error_for(request: Request, message: str, status: int, param: str | None = None) -> JSONResponse:
    """The error response in the shape of the API the request was sent to."""
    if _is_anthropic(request):
        return JSONResponse(anthropic_error_body(message, status), status_code=status)
    return error_response(message, status, param)


def _is_template_error(exc: BaseException) -> bool:
    return any(cls.__name__ == "TemplateError" for cls in type(exc).__mro__)


def to_api_error(exc: BaseException) -> APIError:
    """Map any exception from the serving path to a status; unknown ones are 500s.

    As vLLM: a ``ValueError`` / ``TypeError`` / ``OverflowError`` raised while validating a request
    (``SamplingParams``, the input processor, pydantic) is the client's mistake, so a 400;
    ``NotImplementedError`` a 501; a chat-template error a 400.
    """
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, EngineDeadError):
        return APIError(str(exc), 503)
    if isinstance(exc, (RequestError, ValueError, TypeError, OverflowError)) or _is_template_error(exc):
        param = getattr(exc, "param", None)
        return APIError(str(exc), 400, param if isinstance(param, str) else None)
    if isinstance(exc, NotImplementedError):
        return APIError(str(exc) or "not implemented", 501)
    logger.exception("unexpected error while serving a request", exc_info=exc)
    return APIError(f"internal server error: {type(exc).__name__}: {exc}", 500)


def sse_error(exc: BaseException) -> str:
    """An error in the middle of a stream: one ``data:`` event with the error body."""
    err = to_api_error(exc)
    return f"data: {json.dumps(error_body(err.message, err.status, err.param))}\n\n"


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request body", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return f"the request body is not valid JSON: {first.get('msg')}", None
    msg = first.get("msg", "invalid value")
    return f"{param or 'body'}: {msg} (got {first.get('input')!r})", param


def install_error_handlers(app: FastAPI) -> None:
    """Handlers for what FastAPI raises before a route runs, and ``HandledRoute`` for the rest."""
    from vllm_core.entrypoints.openai.routing import HandledRoute

    app.router.route_class = HandledRoute

    @app.exception_handler(APIError)
    async def _api(request: Request, exc: APIError) -> JSONResponse:
        return error_for(request, exc.message, exc.status, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return error_for(request, message, 400, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_for(request, str(exc.detail), exc.status_code)

    @app.exception_handler(Exception)
    async def _other(request: Request, exc: Exception) -> JSONResponse:
        err = to_api_error(exc)
        return error_for(request, err.message, err.status, err.param)
