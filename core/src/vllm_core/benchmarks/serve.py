"""``vllm-core bench serve``: load a running server the way ``vllm bench serve`` does.

Random token-id prompts go to ``/v1/completions`` as streams (``ignore_eos`` so every request
produces its full output length), arriving as a Poisson process at ``--request-rate`` (all at
once when infinite) with at most ``--max-concurrency`` in flight. Per request: time to first
token, inter-token latencies (between streamed chunks), time per output token and end-to-end
latency; the output token count comes from the stream's ``usage``.

A chunk counts as carrying tokens by its ``token_ids`` (asked for with vLLM's
``return_token_ids``), else by its text: a model served without a tokenizer (dummy weights)
streams token ids and no text, and is measured all the same.

The client must cost far less than the server it measures: 256 streams of a fast model are
tens of thousands of events a second. Plain ``http://`` servers are read with a small HTTP/1.1
reader on asyncio streams (one connection per request, as vLLM's aiohttp client), about a fifth of
httpx's CPU per event; ``https://`` goes through httpx.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from vllm_core.benchmarks.datasets import SampleRequest
from vllm_core.benchmarks.report import Stats


@dataclass
class RequestResult:
    """What one request measured (seconds)."""

    success: bool
    prompt_len: int
    output_tokens: int = 0
    ttft: float = 0.0
    latency: float = 0.0
    itl: list[float] = field(default_factory=list)
    error: str = ""


@dataclass(frozen=True)
class ServeBenchConfig:
    base_url: str
    model: str
    endpoint: str = "/v1/completions"
    request_rate: float = math.inf
    max_concurrency: int | None = None
    seed: int = 0
    api_key: str | None = None
    ignore_eos: bool = True


class HTTPStatusError(Exception):
    """A non-200 answer: its status and the start of its body."""


async def _post_lines(url: str, body: bytes, headers: dict[str, str]) -> AsyncIterator[bytes]:
    """POST ``body`` to an ``http://`` URL and yield the response's lines as they arrive
    (HTTP/1.1, chunked or sized body, ``Connection: close``)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
    try:
        head = [f"POST {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
                f"Host: {parts.netloc}", "Content-Type: application/json", f"Content-Length: {len(body)}",
                "Accept: text/event-stream", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status_line, *header_lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines if h)}
        if status != 200:
            size = int(fields.get("content-length", "-1"))
            raw = await (reader.readexactly(size) if size >= 0 else reader.read())
            raise HTTPStatusError(f"HTTP {status}: {raw.decode(errors='replace')[:200]}")
        pending = b""
        if fields.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                if size == 0:
                    break
                data = pending + (await reader.readexactly(size + 2))[:-2]
                *lines, pending = data.split(b"\n")
                for line in lines:
                    yield line
        else:
            size = int(fields.get("content-length", "-1"))
            data = await (reader.readexactly(size) if size >= 0 else reader.read())
            *lines, pending = data.split(b"\n")
            for line in lines:
                yield line
        if pending:
            yield pending
    finally:
        writer.close()


async def _sse_events(client: Any, url: str, body: dict[str, Any], headers: dict[str, str]) -> AsyncIterator[str]:
    """The ``data:`` payloads of a streamed POST, ``[DONE]`` left out."""
    if client is None:
        async for raw in _post_lines(url, json.dumps(body).encode(), headers):
            if raw.startswith(b"data: ") and raw != b"data: [DONE]":
                yield raw[6:].decode()
        return
    async with client.stream("POST", url, json=body, headers=headers) as r:
        if r.status_code != 200:
            raise HTTPStatusError(f"HTTP {r.status_code}: {(await r.aread()).decode(errors='replace')[:200]}")
        async for line in r.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                yield line[6:]


async def _one(client: Any, cfg: ServeBenchConfig, req: SampleRequest) -> RequestResult:
    """One streamed request; ``client`` is an ``httpx.AsyncClient``, or None for the plain-HTTP reader."""
    body = {
        "model": cfg.model, "prompt": req.prompt_token_ids, "max_tokens": req.expected_output_len,
        "temperature": 0.0, "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": cfg.ignore_eos,
        "return_token_ids": True,
    }
    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    res = RequestResult(success=False, prompt_len=req.prompt_len)
    start = last = time.perf_counter()
    counted = 0
    try:
        async for payload in _sse_events(client, cfg.base_url.rstrip("/") + cfg.endpoint, body, headers):
            data = json.loads(payload)
            if "error" in data:
                res.error = str(data["error"])
                return res
            now = time.perf_counter()
            choice = data["choices"][0] if data.get("choices") else {}
            new_ids = choice.get("token_ids") or []
            if new_ids or choice.get("text"):
                counted += len(new_ids)
                if res.ttft == 0.0:
                    res.ttft = now - start
                else:
                    res.itl.append(now - last)
                last = now
            if data.get("usage"):
                res.output_tokens = int(data["usage"]["completion_tokens"])
        res.latency = time.perf_counter() - start
        res.output_tokens = res.output_tokens or counted
        res.success = res.output_tokens > 0
        if not res.success:
            res.error = "no tokens in the response"
    except HTTPStatusError as exc:
        res.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - a failed request is counted, not fatal
        res.error = f"{type(exc).__name__}: {exc}"
    return res


async def run_serve_benchmark(cfg: ServeBenchConfig, requests: list[SampleRequest]) -> tuple[list[RequestResult], float]:
    """Send every request on the arrival schedule; returns the results and the wall time."""
    import contextlib

    import httpx

    rng = random.Random(cfg.seed)
    sem = asyncio.Semaphore(cfg.max_concurrency) if cfg.max_concurrency else None
    limits = httpx.Limits(max_connections=cfg.max_concurrency or len(requests) or 1)
    plain = urlsplit(cfg.base_url).scheme == "http"
    async with (contextlib.nullcontext() if plain else httpx.AsyncClient(timeout=httpx.Timeout(None),
                                                                           limits=limits)) as client:

        async def limited(req: SampleRequest) -> RequestResult:
            if sem is None:
                return await _one(client, cfg, req)
            async with sem:
                return await _one(client, cfg, req)

        start = time.perf_counter()
        tasks = []
        for i, req in enumerate(requests):
            if i and cfg.request_rate != math.inf:
                await asyncio.sleep(rng.expovariate(cfg.request_rate))
            tasks.append(asyncio.ensure_future(limited(req)))
        results = list(await asyncio.gather(*tasks))
        return results, time.perf_counter() - start


def summarize(results: list[RequestResult], duration: float) -> dict[str, Any]:
    """vLLM's result fields: throughputs, and mean / median / p99 of TTFT, TPOT, ITL, E2EL in ms."""
    ok = [r for r in results if r.success]
    total_in = sum(r.prompt_len for r in ok)
    total_out = sum(r.output_tokens for r in ok)
    out: dict[str, Any] = {
        "duration": duration,
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "errors": sorted({r.error for r in results if not r.success})[:5],
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "total_token_events": sum(len(r.itl) + 1 for r in ok if r.ttft),
        "request_throughput": len(ok) / duration if duration else 0.0,
        "output_throughput": total_out / duration if duration else 0.0,
        "total_token_throughput": (total_in + total_out) / duration if duration else 0.0,
    }
    series = {
        "ttft": [r.ttft for r in ok],
        "tpot": [(r.latency - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1],
        "itl": [x for r in ok for x in r.itl],
        "e2el": [r.latency for r in ok],
    }
    for name, values in series.items():
        stats = Stats.of([v * 1000 for v in values]) if values else Stats(0.0, 0.0, 0.0, {})
        out[f"mean_{name}_ms"] = stats.mean
        out[f"median_{name}_ms"] = stats.median
        out[f"p99_{name}_ms"] = stats.p99
    return out


def table_rows(summary: dict[str, Any], cfg: ServeBenchConfig) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("Successful requests", summary["completed"]),
        ("Failed requests", summary["failed"]),
        ("Request rate configured (RPS)", "inf" if cfg.request_rate == math.inf else cfg.request_rate),
        ("Maximum request concurrency", cfg.max_concurrency or "none"),
        ("Benchmark duration (s)", summary["duration"]),
        ("Total input tokens", summary["total_input_tokens"]),
        ("Total generated tokens", summary["total_output_tokens"]),
        ("Request throughput (req/s)", summary["request_throughput"]),
        ("Output token throughput (tok/s)", summary["output_throughput"]),
        ("Total token throughput (tok/s)", summary["total_token_throughput"]),
    ]
    for name, label in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2EL")):
        for kind in ("mean", "median", "p99"):
            rows.append((f"{kind.capitalize()} {label} (ms)", summary[f"{kind}_{name}_ms"]))
    return rows
