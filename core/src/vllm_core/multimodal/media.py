"""Image bytes from the URLs of chat content parts, and the images they decode to.

Three URL kinds, as vLLM accepts them:

- ``data:image/<type>;base64,<data>``: decoded in place;
- ``file:///path``: read only when the path, symlinks resolved, lies under the allowed directory
  (``--allowed-local-media-path DIR``; without it every ``file://`` URL is refused);
- ``http://`` / ``https://``: fetched with a deadline (``VLLM_IMAGE_FETCH_TIMEOUT`` seconds,
  default 5) and a size limit (``VLLM_IMAGE_FETCH_MAX_BYTES``, default 20 MiB), which also bounds
  ``data:`` and ``file://`` images; with ``--allowed-media-domains`` only from those hosts and
  without following redirects (as vLLM: a redirect could leave the list).

``MediaConnector.load_image`` serves the offline ``LLM.chat``; ``load_image_async`` serves the
server (the download is asynchronous, base64 and image decoding run in a worker thread, so the
event loop never blocks). Every failure is a ``MediaError`` (a ``ValueError``, so the server
answers 400) that names the content part, the URL and the fix.

This module imports no image library: Pillow is imported when the first image is decoded, so a
text-only engine never loads it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import io
import os
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

ENV_FETCH_TIMEOUT = "VLLM_IMAGE_FETCH_TIMEOUT"
"""Seconds an ``http(s)://`` image may take, connect to last byte (vLLM's name; default 5)."""
ENV_FETCH_MAX_BYTES = "VLLM_IMAGE_FETCH_MAX_BYTES"
"""Largest image, in bytes, fetched, read or base64-decoded (default 20 MiB)."""
DEFAULT_FETCH_TIMEOUT = 5.0
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 8192 * 8192
"""Largest image decoded, in pixels: a few compressed megabytes can hold a far larger image
(a decompression bomb); vision encoders resize to well under a megapixel anyway."""
INSTALL_HINT = "pip install ./plugins/vllm-multimodal"


class MediaError(ValueError):
    """An image could not be loaded: a bad or refused URL, a failed fetch, undecodable bytes.

    ``param`` names the content part (``messages[0].content[1]``): the server puts it in the
    error body's ``param`` field.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


def describe_url(url: str, limit: int = 80) -> str:
    """``url`` short enough for an error message (a data URL is mostly base64)."""
    if url.startswith("data:"):
        head = url.split(",", 1)[0]
        return f"{head},... ({len(url)} characters)"
    return url if len(url) <= limit else url[: limit - 3] + "..."


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        parsed = float(value)
    except ValueError:
        raise ValueError(f"${name}={value!r} is not a number of seconds; unset it or give e.g. 5") from None
    if parsed <= 0:
        raise ValueError(f"${name}={value!r} must be > 0")
    return parsed


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        parsed = int(value)
    except ValueError:
        raise ValueError(f"${name}={value!r} is not a whole number of bytes; unset it or give e.g. 20971520") from None
    if parsed <= 0:
        raise ValueError(f"${name}={value!r} must be > 0")
    return parsed


def decode_image(data: bytes, where: str = "image", source: str = "") -> Any:
    """``data`` as an RGB ``PIL.Image.Image`` (as vLLM converts every image); Pillow is imported
    here, on first use."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise MediaError(f"{where}: decoding images needs Pillow, which is not installed; run "
                         f"`{INSTALL_HINT}` (it brings Pillow and the vision-language models)", where) from None
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only: the size is known before decoding
        if image.width * image.height > MAX_PIXELS:
            raise MediaError(f"{where}: {source or 'the image'} is {image.width}x{image.height} pixels, more than the "
                             f"limit of {MAX_PIXELS} pixels; send a smaller image", where)
        image.load()
        return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        head = data[:8].hex()
        raise MediaError(f"{where}: the bytes of {source or 'the image'} ({len(data)} bytes, starting {head}) are "
                         f"not an image Pillow can decode ({type(exc).__name__}: {exc}); send a PNG, JPEG, GIF or "
                         "WebP image", where) from None


@dataclass(frozen=True)
class MediaConnector:
    """Where images may come from and how much of them is allowed.

    ``allowed_local_media_path``: the directory ``file://`` URLs may read under (None: none);
    ``fetch_timeout``: seconds for a whole ``http(s)://`` download; ``max_bytes``: the largest
    image accepted from any URL kind; ``allowed_media_domains``: the only hosts ``http(s)://``
    URLs may name (None: any host, redirects followed).
    """

    allowed_local_media_path: Path | None = None
    fetch_timeout: float = DEFAULT_FETCH_TIMEOUT
    max_bytes: int = DEFAULT_MAX_BYTES
    allowed_media_domains: tuple[str, ...] | None = None

    @classmethod
    def create(cls, allowed_local_media_path: str | os.PathLike[str] | None = None, fetch_timeout: float | None = None,
               max_bytes: int | None = None, allowed_media_domains: Sequence[str] | None = None) -> MediaConnector:
        """A connector from options, unset ones from ``$VLLM_IMAGE_FETCH_TIMEOUT`` /
        ``$VLLM_IMAGE_FETCH_MAX_BYTES`` or the defaults; the allowed directory must exist."""
        allowed = None
        if allowed_local_media_path is not None and str(allowed_local_media_path):
            allowed = Path(allowed_local_media_path).expanduser().resolve()
            if not allowed.is_dir():
                raise ValueError(f"allowed_local_media_path {str(allowed_local_media_path)!r} is not a directory; "
                                 "give an existing directory whose files file:// image URLs may read")
        timeout = fetch_timeout if fetch_timeout is not None else _env_float(ENV_FETCH_TIMEOUT, DEFAULT_FETCH_TIMEOUT)
        limit = max_bytes if max_bytes is not None else _env_int(ENV_FETCH_MAX_BYTES, DEFAULT_MAX_BYTES)
        if timeout <= 0 or limit <= 0:
            raise ValueError(f"fetch_timeout ({timeout}) and max_bytes ({limit}) must be > 0")
        domains = tuple(d.lower() for d in allowed_media_domains) if allowed_media_domains else None
        return cls(allowed, timeout, limit, domains)

    # ------------------------------------------------------------------------------ bytes
    def _scheme(self, url: Any, where: str) -> str:
        if not isinstance(url, str) or not url:
            raise MediaError(f"{where}: the image URL must be a non-empty string, got {url!r}", where)
        scheme = urlparse(url).scheme.lower() if ":" in url else ""
        if scheme not in ("data", "file", "http", "https"):
            raise MediaError(
                f"{where}: image URL {describe_url(url)!r} has scheme {scheme or '(none)'!r}, which is not "
                "allowed; use a data:image/...;base64, URL, an http(s):// URL, or a file:// path under "
                "--allowed-local-media-path", where)
        domains = self.allowed_media_domains
        if scheme in ("http", "https") and domains is not None:
            host = (urlparse(url).hostname or "").lower()
            if host not in domains:
                raise MediaError(f"{where}: image URL {describe_url(url)!r} names host {host!r}, which is not in "
                                 f"--allowed-media-domains ({', '.join(domains)}); fetch from one of those hosts or "
                                 "send the image as a data: URL", where)
        return scheme

    def _too_large(self, where: str, url: str, size: int | str) -> MediaError:
        return MediaError(f"{where}: the image at {describe_url(url)!r} is {size} bytes, more than the limit of "
                          f"{self.max_bytes} bytes; send a smaller image or raise ${ENV_FETCH_MAX_BYTES} "
                          "(--image-fetch-max-bytes)", where)

    def _data_bytes(self, url: str, where: str) -> bytes:
        head, sep, payload = url.partition(",")
        media_type, *params = head[len("data:"):].split(";")
        if not sep or "base64" not in params:
            raise MediaError(f"{where}: data URL {describe_url(url)!r} is not base64; write it as "
                             "data:image/png;base64,<data>", where)
        if not media_type.lower().startswith("image/"):
            raise MediaError(f"{where}: data URL media type {media_type or '(none)'!r} is not an image type; "
                             "write it as data:image/png;base64,<data> (or image/jpeg, image/webp, ...)", where)
        if len(payload) * 3 // 4 > self.max_bytes + 2:
            raise self._too_large(where, url, f"about {len(payload) * 3 // 4}")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MediaError(f"{where}: data URL {describe_url(url)!r} is not valid base64 ({exc}); encode the "
                             "image bytes with standard base64", where) from None

    def _file_bytes(self, url: str, where: str) -> bytes:
        allowed = self.allowed_local_media_path
        if allowed is None:
            raise MediaError(f"{where}: file:// image URL {describe_url(url)!r} is refused: local files are read "
                             "only under a directory given with --allowed-local-media-path DIR "
                             "(LLM(allowed_local_media_path=DIR) offline)", where)
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise MediaError(f"{where}: file:// URL {describe_url(url)!r} names host {parsed.netloc!r}; only local "
                             "paths (file:///path) are read", where)
        raw = Path(unquote(parsed.path))
        try:  # not strict: a path outside is refused as outside whether it exists or not (no probing)
            path = raw.resolve(strict=False)
        except (OSError, RuntimeError):
            raise MediaError(f"{where}: file:// image path {str(raw)!r} cannot be resolved (a symlink loop?)",
                             where) from None
        if not path.is_relative_to(allowed):
            raise MediaError(f"{where}: file:// image {str(raw)!r} resolves to {str(path)!r}, outside the allowed "
                             f"directory {str(allowed)!r} (--allowed-local-media-path); move the image there", where)
        if not path.exists():
            raise MediaError(f"{where}: file:// image {str(raw)!r} does not exist", where)
        if not path.is_file():
            raise MediaError(f"{where}: file:// image {str(raw)!r} is not a regular file", where)
        size = path.stat().st_size
        if size > self.max_bytes:
            raise self._too_large(where, url, size)
        return path.read_bytes()

    def _http_error(self, where: str, url: str, exc: BaseException) -> MediaError:
        import httpx

        if isinstance(exc, (httpx.TimeoutException, TimeoutError, asyncio.TimeoutError)):
            return MediaError(f"{where}: fetching image {describe_url(url)!r} timed out after {self.fetch_timeout:g} "
                              f"s; use a faster host, send the image inline as a data: URL, or raise "
                              f"${ENV_FETCH_TIMEOUT}", where)
        return MediaError(f"{where}: fetching image {describe_url(url)!r} failed ({type(exc).__name__}: {exc}); check "
                          "that the URL is reachable from the server, or send the image as a data: URL", where)

    def _check_response(self, where: str, url: str, status: int, length: str | None) -> None:
        if 300 <= status < 400 and self.allowed_media_domains is not None:
            raise MediaError(f"{where}: fetching image {describe_url(url)!r} returned a redirect (HTTP {status}), which "
                             "is not followed while --allowed-media-domains is set; give the final URL", where)
        if status != 200:
            raise MediaError(f"{where}: fetching image {describe_url(url)!r} returned HTTP {status}; check the URL",
                             where)
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            raise self._too_large(where, url, length)

    def _http_bytes(self, url: str, where: str) -> bytes:
        httpx = _httpx(where)
        deadline = time.monotonic() + self.fetch_timeout
        try:
            with httpx.Client(timeout=self.fetch_timeout, follow_redirects=self.allowed_media_domains is None,
                              verify=_ssl_context()) as client, \
                    client.stream("GET", url) as resp:
                self._check_response(where, url, resp.status_code, resp.headers.get("content-length"))
                buf = bytearray()
                for chunk in resp.iter_bytes():
                    buf += chunk
                    if len(buf) > self.max_bytes:
                        raise self._too_large(where, url, f"more than {len(buf) - 1}")
                    if time.monotonic() > deadline:
                        raise TimeoutError
                return bytes(buf)
        except MediaError:
            raise
        except (httpx.HTTPError, OSError) as exc:
            raise self._http_error(where, url, exc) from None

    async def _http_bytes_async(self, url: str, where: str) -> bytes:
        httpx = _httpx(where)

        async def fetch() -> bytes:
            async with httpx.AsyncClient(timeout=self.fetch_timeout, follow_redirects=self.allowed_media_domains is None,
                                         verify=_ssl_context()) as client, \
                    client.stream("GET", url) as resp:
                self._check_response(where, url, resp.status_code, resp.headers.get("content-length"))
                buf = bytearray()
                async for chunk in resp.aiter_bytes():
                    buf += chunk
                    if len(buf) > self.max_bytes:
                        raise self._too_large(where, url, f"more than {len(buf) - 1}")
                return bytes(buf)

        try:
            return await asyncio.wait_for(fetch(), self.fetch_timeout)
        except MediaError:
            raise
        except (httpx.HTTPError, OSError, asyncio.TimeoutError) as exc:
            raise self._http_error(where, url, exc) from None

    def load_bytes(self, url: str, where: str = "image") -> bytes:
        """The bytes behind ``url`` (``where`` names the content part in errors)."""
        scheme = self._scheme(url, where)
        if scheme == "data":
            return self._data_bytes(url, where)
        if scheme == "file":
            return self._file_bytes(url, where)
        return self._http_bytes(url, where)

    async def load_bytes_async(self, url: str, where: str = "image") -> bytes:
        """``load_bytes`` without blocking the event loop."""
        scheme = self._scheme(url, where)
        if scheme in ("http", "https"):
            return await self._http_bytes_async(url, where)
        return await asyncio.to_thread(self.load_bytes, url, where)

    # ----------------------------------------------------------------------------- images
    def load_image(self, url: str, where: str = "image") -> Any:
        """The RGB ``PIL.Image.Image`` behind ``url``."""
        return decode_image(self.load_bytes(url, where), where, describe_url(url))

    async def load_image_async(self, url: str, where: str = "image") -> Any:
        """``load_image`` for the server: fetch asynchronously, decode in a worker thread."""
        data = await self.load_bytes_async(url, where)
        return await asyncio.to_thread(decode_image, data, where, describe_url(url))


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context for every fetch: building one (reading the CA bundle) costs ~20 ms, which
    httpx would otherwise pay per client, i.e. per image."""
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:
        return ssl.create_default_context()


def _httpx(where: str) -> Any:
    try:
        import httpx
    except ImportError:
        raise MediaError(f"{where}: fetching http(s):// images needs httpx; run `pip install httpx` (the "
                         "server extra, ./core[server], has it) or send the image as a data: URL", where) from None
    return httpx


__all__ = ["ENV_FETCH_MAX_BYTES", "ENV_FETCH_TIMEOUT", "MediaConnector", "MediaError", "decode_image", "describe_url"]
