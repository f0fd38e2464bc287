"""``HandledRoute``: the route class of every endpoint. Two jobs a plain FastAPI route leaves undone.

1. **Every failure is an answer.** An exception a route raises becomes its error response right
   here. Left to Starlette, any exception without a specific handler reaches
   ``ServerErrorMiddleware``, which sends the 500 and then re-raises: uvicorn logs a traceback
   and closes the keep-alive connection, so a pooled client's next request fails. Unknown
   exceptions are still logged with their traceback (they are our bugs), as 500s.
2. **A client that leaves cancels its work.** While a POST route runs (a non-streaming
   completion can take minutes), the request's ``receive`` channel is watched for
   ``http.disconnect``; when it comes, the route's task is cancelled, which closes the engine
   iterators and aborts their requests. A streaming response watches for disconnects itself
   once it is returned (Starlette's ``StreamingResponse``), as in vLLM's ``with_cancellation``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from vllm_core.entrypoints.openai.errors import error_for, to_api_error

logger = logging.getLogger(__name__)

CLIENT_CLOSED_STATUS = 499
"""What a request whose client left is logged with (nobody receives it)."""


async def wait_for_disconnect(request: Request) -> None:
    """Return once the client has gone. Only call after the body has been read: it consumes the
    request's remaining ``receive`` messages."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


class HandledRoute(APIRoute):
    """A route that answers every exception itself and is cancelled when its client leaves."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answered(request: Request) -> Response:
            try:
                return await handler(request)
            except (RequestValidationError, StarletteHTTPException):
                raise  # their exception handlers answer inside ExceptionMiddleware (no re-raise)
            except Exception as exc:  # noqa: BLE001 - every failure is an answer
                err = to_api_error(exc)
                return error_for(request, err.message, err.status, err.param)

        async def cancellable(request: Request) -> Response:
            if request.method != "POST":
                return await answered(request)
            await request.body()  # cached on the request: the handler reads it from there
            work = asyncio.ensure_future(answered(request))
            gone = asyncio.ensure_future(wait_for_disconnect(request))
            try:
                await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                gone.cancel()
                if not work.done():
                    work.cancel()
            if not work.cancelled() and work.done():
                return work.result()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            logger.info("%s %s: the client disconnected; its request was cancelled", request.method,
                        request.url.path)
            return Response(status_code=CLIENT_CLOSED_STATUS)

        return cancellable
