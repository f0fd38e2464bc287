"""Every 4xx is a handled response: one persistent keep-alive connection carries bad requests
(rejected by the protocol, ``SamplingParams``, the input processor or the engine's limits)
interleaved with good ones; every one is answered with the OpenAI error body on the same TCP
connection, and the server logs no traceback."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.server.conftest import RunningServer

BAD: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/completions", {"prompt": "hi", "temperature": -1}, "temperature"),
    ("/v1/completions", {"prompt": "hi", "top_p": 0}, "top_p"),
    ("/v1/completions", {"prompt": "hi", "top_p": 1.5}, "top_p"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 0, "echo": False}, "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": -3}, "max_tokens"),
    ("/v1/completions", {"prompt": "hi", "logprobs": 50}, "logprobs"),
    ("/v1/completions", {"prompt": ""}, "empty"),
    ("/v1/completions", {"prompt": []}, "empty"),
    ("/v1/completions", {"prompt": "hi", "top_k": -5}, "top_k"),
    ("/v1/completions", {"prompt": "hi", "min_p": 2}, "min_p"),
    ("/v1/completions", {"prompt": "hi", "presence_penalty": 9}, "presence_penalty"),
    ("/v1/completions", {"prompt": "hi", "frequency_penalty": -9}, "frequency_penalty"),
    ("/v1/completions", {"prompt": "hi", "repetition_penalty": 0}, "repetition_penalty"),
    ("/v1/completions", {"prompt": "hi", "n": 0}, "n"),
    ("/v1/completions", {"prompt": "hi", "min_tokens": 50, "max_tokens": 5}, "min_tokens"),
    ("/v1/completions", {"prompt": "hi", "stop": [""]}, "stop"),
    ("/v1/completions", {"prompt": "hi", "stop_token_ids": [-1]}, "stop_token_ids"),
    ("/v1/completions", {"prompt": "hi", "logit_bias": {"x": 1}}, "logit_bias"),
    ("/v1/completions", {"prompt": "hi", "logit_bias": {"99999999": 1}}, "logit_bias"),
    ("/v1/completions", {"prompt": "hi", "allowed_token_ids": []}, "allowed_token_ids"),
    ("/v1/completions", {"prompt": "hi", "truncate_prompt_tokens": 0}, "truncate_prompt_tokens"),
    ("/v1/completions", {"prompt": [[1, 2], [-4]]}, "vocabulary"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "temperature": -2}, "temperature"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 99,
                              "logprobs": True}, "logprobs"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 0},
     "max_tokens"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "top_p": -1}, "top_p"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 0}, "n"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "stop": [""]}, "stop"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "min_p": -1}, "min_p"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "seed": 2**70}, "seed"),
]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_log() -> Iterator[_Records]:
    handler = _Records()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn"), logging.getLogger("uvicorn.error")]
    for lg in loggers:
        lg.addHandler(handler)
    yield handler
    for lg in loggers:
        lg.removeHandler(handler)


def _local_port(r: httpx.Response) -> int:
    """The client side port of the TCP connection that carried ``r``."""
    addr = r.extensions["network_stream"].get_extra_info("client_addr")
    return int(addr[1])


def test_bad_requests_keep_the_connection(server: RunningServer, server_log: _Records) -> None:
    assert len(BAD) >= 30
    with httpx.Client(base_url=server.url, timeout=60, limits=httpx.Limits(max_connections=1)) as client:
        ports = set()
        for path, body, needle in BAD:
            bad = client.post(path, json={"model": server.model, **body})
            assert bad.status_code == 400, (body, bad.status_code, bad.text)
            err = bad.json()["error"]
            assert set(err) == {"message", "type", "param", "code"}, err
            assert err["type"] == "BadRequestError" and err["code"] == 400, err
            assert needle in err["message"] or needle == err["param"], (body, err)
            assert "Traceback" not in err["message"]
            assert bad.headers.get("connection", "").lower() != "close", body
            good = client.post("/v1/completions", json={"model": server.model, "prompt": "hi", "max_tokens": 2})
            assert good.status_code == 200, (body, good.text)
            ports.update({_local_port(bad), _local_port(good)})
        assert len(ports) == 1, f"the keep-alive connection was dropped and reopened: ports {ports}"
    tracebacks = [r for r in server_log.records if r.exc_info or "Traceback" in r.getMessage()
                  or "Exception in ASGI application" in r.getMessage()]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
