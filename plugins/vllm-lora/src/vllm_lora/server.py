"""LoRA on the OpenAI server: adapters as models (vLLM's behaviour).

``--lora-modules sql=/path`` (or a JSON object with ``name``, ``path``, ``base_model_name``)
serves adapters from the start: a request whose ``model`` is an adapter's name runs with it,
and ``/v1/models`` lists each with ``parent`` = the base model. With
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=true``, ``POST /v1/load_lora_adapter`` and
``/v1/unload_lora_adapter`` change the table while the server runs (without it those routes do
not exist: 404). An adapter is checked (config and shapes) when it is added: a bad one is a
400, an unknown name on unload a 404, a name already served a 400.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from typing import Any

from fastapi import Request  # this module loads only when the server builds its app

from vllm_core.plugins.api import ConfigError, FrontendContext, LoRARequest, ServedModel, ServedModels
from vllm_lora.adapter import AdapterError
from vllm_lora.config import LoRAConfig
from vllm_lora.request import LoRARequestArgument

logger = logging.getLogger(__name__)

ENV_RUNTIME_UPDATES = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"


def runtime_updates_allowed() -> bool:
    return os.environ.get(ENV_RUNTIME_UPDATES, "").strip().lower() in ("1", "true", "yes")


def parse_lora_module(value: str) -> tuple[str, str, str | None]:
    """``name=path`` or ``{"name": ..., "path": ..., "base_model_name": ...}`` -> (name, path, base)."""
    text = value.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--lora-modules {value!r}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not isinstance(obj.get("path"), str):
            raise ConfigError(f"--lora-modules {value!r}: the JSON form needs string 'name' and 'path'")
        return obj["name"], obj["path"], obj.get("base_model_name")
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise ConfigError(f"--lora-modules {value!r}: give name=path or a JSON object with name and path")
    return name, path, None


class AdapterTable:
    """Adds and removes adapters in the server's model table (one per app)."""

    def __init__(self, engine: Any, models: ServedModels, base_name: str) -> None:
        self.models = models
        self.base_name = base_name
        self.checker = LoRARequestArgument(FrontendContext(engine.config, engine.info.hf_config, engine.tokenizer))
        self._ids = itertools.count(1)

    def add(self, name: str, path: str, base_model_name: str | None = None) -> None:
        """Check the adapter and serve it as ``name``; AdapterError for a bad adapter, ValueError
        for a name already served."""
        if name in self.models or name == self.base_name:
            raise ValueError(f"The lora adapter '{name}' has already been loaded.")
        self.checker.check(path)
        request = LoRARequest(name, next(self._ids), path, base_model_name)
        self.models.add(ServedModel(name, path, base_model_name or self.base_name, {"lora_request": request}))
        logger.info("serving LoRA adapter %r from %s", name, path)

    def remove(self, name: str) -> bool:
        return self.models.remove(name) is not None


def _error(message: str, status: int, param: str | None = None) -> Any:
    from fastapi.responses import JSONResponse

    kind = {400: "BadRequestError", 404: "NotFoundError"}.get(status, "Error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status)


def add_lora_routes(app: Any, engine: Any, settings: Any) -> None:
    """The ``register_api_routes`` hook: the start-up adapters and, when allowed, the routes."""
    cfg = engine.config.plugin_config(LoRAConfig)
    if cfg is None or not cfg.enable_lora:
        return
    table = AdapterTable(engine, settings.extra_models, settings.served_model_names[0])
    for value in cfg.lora_modules or []:
        name, path, base = parse_lora_module(value)
        try:
            table.add(name, path, base)
        except (AdapterError, ValueError) as exc:
            raise ConfigError(f"--lora-modules {value!r}: {exc}") from None
    if not runtime_updates_allowed():
        return
    from fastapi.responses import PlainTextResponse

    async def body(request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            data = None
        return data if isinstance(data, dict) else {}

    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(request: Request) -> Any:
        data = await body(request)
        name, path = data.get("lora_name"), data.get("lora_path")
        if not isinstance(name, str) or not name or not isinstance(path, str) or not path:
            return _error("both 'lora_name' and 'lora_path' must be given as strings", 400)
        try:
            table.add(name, path, data.get("base_model_name"))
        except ValueError as exc:
            return _error(str(exc), 400, "lora_name")
        except AdapterError as exc:
            return _error(str(exc), 400, "lora_path")
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(request: Request) -> Any:
        data = await body(request)
        name = data.get("lora_name")
        if not isinstance(name, str) or not name:
            return _error("'lora_name' must be given as a string", 400)
        if not table.remove(name):
            return _error(f"The lora adapter '{name}' cannot be found.", 404, "lora_name")
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")
