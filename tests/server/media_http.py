"""A real HTTP server on 127.0.0.1 (``http.server`` in a thread) that serves test images and
misbehaves on purpose: slow, dripping, too large, missing, undecodable, redirected."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BIG = 8192
"""Bytes ``/big`` announces and sends (the tests' size limits are under it)."""
SLOW_S = 3.0
"""How long ``/slow`` waits before answering (the tests' fetch timeout is well under it)."""


def png_bytes(size: tuple[int, int] = (8, 6), color: tuple[int, int, int] = (200, 30, 40)) -> bytes:
    """A small PNG drawn with Pillow."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class MediaHTTPServer:
    """The running server: ``url(path)`` and the files it serves (path -> bytes)."""

    base: str
    files: dict[str, bytes] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"


def _handler(state: MediaHTTPServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

        def _send(self, body: bytes, status: int = 200, content_type: str = "image/png") -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:
                pass  # the client gave up (a timeout test)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path
            state.hits[path] = state.hits.get(path, 0) + 1
            if path in state.files:
                self._send(state.files[path])
            elif path == "/slow":
                time.sleep(SLOW_S)
                self._send(b"late")
            elif path == "/drip":  # every byte in time for a read timeout, the whole far too slow
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", "40")
                self.end_headers()
                try:
                    for _ in range(40):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.1)
                except OSError:
                    pass
            elif path == "/big":  # says how big it is
                self._send(b"\0" * BIG)
            elif path == "/big-unannounced":  # chunked, no Content-Length: only counting catches it
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for _ in range(8):
                        chunk = b"\0" * 1024
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass
            elif path == "/garbage":
                self._send(b"this is not an image at all", content_type="image/png")
            elif path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/red.png")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send(b"not found", status=404, content_type="text/plain")

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops concurrent connects (SYN retried after a second)


@contextmanager
def media_http_server(files: dict[str, bytes] | None = None) -> Iterator[MediaHTTPServer]:
    """Serve ``files`` and the misbehaving routes until the block ends."""
    httpd = _Server(("127.0.0.1", 0), BaseHTTPRequestHandler)
    state = MediaHTTPServer(f"http://127.0.0.1:{httpd.server_address[1]}", dict(files or {}))
    httpd.RequestHandlerClass = _handler(state)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
