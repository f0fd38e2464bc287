"""LoRA through a real server and the openai client: ``--lora-modules`` adapters as models,
``/v1/models`` with parents, runtime load/unload behind VLLM_ALLOW_RUNTIME_LORA_UPDATING, errors."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.plugins.lora.conftest import ADAPTERS, save_adapter
from tests.server.conftest import TINY_ENGINE, RunningServer, start_server
from tests.server.models import save_tiny_chat_model
from vllm_core import LLM, LoRARequest, SamplingParams

PROMPT = "The capital of France is"
MESSAGES = [{"role": "user", "content": "Name a color."}]


@pytest.fixture(scope="module")
def chat_model_and_adapters(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    from transformers import AutoModelForCausalLM

    path = save_tiny_chat_model(str(tmp_path_factory.mktemp("lora-chat")))
    base = AutoModelForCausalLM.from_pretrained(path)
    adapters = {}
    for i, spec in enumerate(ADAPTERS[:2]):
        adir = str(tmp_path_factory.mktemp(f"lora-chat-{spec.name}"))
        save_adapter(base, spec, adir, seed=200 + i)
        adapters[spec.name] = adir
    return path, adapters


ENGINE = {**TINY_ENGINE, "enable_lora": True, "max_loras": 2, "max_lora_rank": 32}


@pytest.fixture(scope="module")
def lora_server(chat_model_and_adapters: tuple[str, dict[str, str]]) -> Iterator[RunningServer]:
    path, adapters = chat_model_and_adapters
    old = os.environ.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING")
    os.environ["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "true"
    try:
        srv = start_server(path, {**ENGINE, "lora_modules": [f"sql={adapters['qv8']}"]})
    finally:
        if old is None:
            os.environ.pop("VLLM_ALLOW_RUNTIME_LORA_UPDATING")
        else:
            os.environ["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = old
    yield srv
    srv.stop()


def post(url: str, body: dict[str, Any]) -> tuple[int, str]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def offline_texts(path: str, adapters: dict[str, str]) -> dict[str | None, str]:
    llm = LLM(path, dtype="float32", max_model_len=256, enable_lora=True, max_loras=2, max_lora_rank=32,
              use_tqdm_on_load=False)
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    out: dict[str | None, str] = {}
    for i, name in enumerate([None, "qv8", "all16"]):
        lr = None if name is None else LoRARequest(name, i, adapters[name])
        out[name] = llm.generate(PROMPT, params, use_tqdm=False, lora_request=lr)[0].outputs[0].text
        out[f"chat-{name}"] = llm.chat(MESSAGES, params, use_tqdm=False, lora_request=lr)[0].outputs[0].text
    return out


def test_adapter_models_give_the_offline_results(lora_server: RunningServer,
                                                 chat_model_and_adapters: tuple[str, dict[str, str]]) -> None:
    path, adapters = chat_model_and_adapters
    want = offline_texts(path, adapters)
    assert len({want[k] for k in (None, "qv8", "all16")}) == 3, "the adapters must change the output"
    client = lora_server.client()
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"test-model", "sql"}
    assert models["sql"].model_extra["parent"] == "test-model" and models["sql"].model_extra["root"] == adapters["qv8"]

    def complete(model: str) -> str:
        r = client.completions.create(model=model, prompt=PROMPT, max_tokens=8, temperature=0.0,
                                      extra_body={"ignore_eos": True})
        return str(r.choices[0].text)

    assert complete("sql") == want["qv8"]
    assert complete("test-model") == want[None]
    chat = client.chat.completions.create(model="sql", messages=MESSAGES, max_tokens=8, temperature=0.0,
                                          extra_body={"ignore_eos": True})
    assert chat.choices[0].message.content == want["chat-qv8"] != want["chat-None"]

    # runtime load, use, errors, unload
    status, text = post(f"{lora_server.url}/v1/load_lora_adapter", {"lora_name": "big", "lora_path": adapters["all16"]})
    assert status == 200 and "big" in text, text
    assert complete("big") == want["all16"]
    assert {m.id for m in client.models.list().data} == {"test-model", "sql", "big"}
    status, text = post(f"{lora_server.url}/v1/load_lora_adapter", {"lora_name": "big", "lora_path": adapters["all16"]})
    assert status == 400 and "already been loaded" in text
    status, text = post(f"{lora_server.url}/v1/load_lora_adapter", {"lora_name": "bad", "lora_path": "/no/such/dir"})
    assert status == 400 and "not found or not a directory" in text
    status, _ = post(f"{lora_server.url}/v1/unload_lora_adapter", {"lora_name": "big"})
    assert status == 200
    status, text = post(f"{lora_server.url}/v1/unload_lora_adapter", {"lora_name": "big"})
    assert status == 404 and "cannot be found" in text
    import openai

    with pytest.raises(openai.NotFoundError, match="big"):
        complete("big")
    assert complete("sql") == want["qv8"]


def test_runtime_routes_need_the_environment_variable(lora_server: RunningServer) -> None:
    """Without VLLM_ALLOW_RUNTIME_LORA_UPDATING the load/unload routes do not exist (404)."""
    from starlette.testclient import TestClient

    from vllm_core.entrypoints.openai.api_server import build_app
    from vllm_core.entrypoints.openai.serving_engine import ServerSettings

    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in os.environ
    app = build_app(lora_server.engine, ServerSettings(served_model_names=("test-model",)))
    with TestClient(app) as tc:
        assert tc.post("/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "/x"}).status_code == 404
        assert tc.post("/v1/unload_lora_adapter", json={"lora_name": "x"}).status_code == 404


def lora_info(url: str) -> dict[str, str] | None:
    """The labels of ``/metrics``' one ``vllm:lora_requests_info`` series (None: absent)."""
    import re

    import httpx

    lines = [ln for ln in httpx.get(f"{url}/metrics", timeout=30).text.splitlines()
             if ln.startswith("vllm:lora_requests_info{")]
    assert len(lines) <= 1, lines  # one series: the current state, no stale label sets
    if not lines:
        return None
    return dict(re.findall(r'(\w+)="([^"]*)"', lines[0].partition("}")[0]))


def test_lora_requests_info_on_metrics(lora_server: RunningServer) -> None:
    """``vllm:lora_requests_info`` with vLLM's labels: nothing running when idle; a streaming
    request on the ``sql`` adapter shows it among the running adapters."""
    assert lora_info(lora_server.url) == {"max_lora": "2", "waiting_lora_adapters": "", "running_lora_adapters": ""}
    client = lora_server.client()
    stream = client.completions.create(model="sql", prompt=PROMPT, max_tokens=120, temperature=0.0, stream=True,
                                       extra_body={"ignore_eos": True})
    seen = []
    for _ in stream:  # each chunk: the request is still running
        seen.append(lora_info(lora_server.url))
        if seen[-1] is not None and seen[-1]["running_lora_adapters"] == "sql":
            break
    stream.close()
    assert seen and seen[-1] == {"max_lora": "2", "waiting_lora_adapters": "", "running_lora_adapters": "sql"}, seen
