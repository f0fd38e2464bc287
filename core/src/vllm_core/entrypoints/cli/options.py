"""Engine flags shared by every command that loads a model, with vLLM's names."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any

import click

_DTYPES = ["auto", "float32", "bfloat16", "float16", "half", "float"]


def engine_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--model", "model", default=None, help="HF model directory or .gguf file (default: embedded SmolLM2-135M-Instruct)."),
        click.option("--tokenizer", default=None, help="Tokenizer directory (default: from the model)."),
        click.option("--dtype", type=click.Choice(_DTYPES), default="auto", show_default=True),
        click.option("--max-model-len", type=int, default=None, help="Longest prompt + output."),
        click.option("--max-num-seqs", type=int, default=None, help="Most requests per step."),
        click.option("--max-num-batched-tokens", type=int, default=None, help="Token budget per step."),
        click.option("--enable-prefix-caching/--no-enable-prefix-caching", default=None),
        click.option("--block-size", type=int, default=None, help="Tokens per KV block."),
        click.option("--seed", type=int, default=None),
        click.option("--load-format", default=None, help="auto, safetensors, gguf, dummy."),
        click.option("--device", default=None, help="Platform to force (reference, cpu, cuda, ...)."),
        click.option("--kv-cache-memory-bytes", type=int, default=None),
        click.option("--num-gpu-blocks-override", type=int, default=None),
        click.option("--tensor-parallel-size", type=int, default=None, help="Devices each layer is split over (tensor parallelism)."),
        click.option("--pipeline-parallel-size", type=int, default=None, help="Stages of consecutive layers (pipeline parallelism)."),
        click.option("--distributed-executor-backend", type=click.Choice(["uni", "mp", "ray"]), default=None,
                     help="uni (one process), mp (a process per rank), ray (actors, several nodes); default: vLLM's rule."),
        click.option("--distributed-timeout-s", type=float, default=None,
                     help="Seconds a worker may stay silent before the engine fails (default 300)."),
        click.option("--speculative-config", default=None, callback=_json_option,
                     help='Speculative decoding as JSON, e.g. \'{"method": "ngram", "num_speculative_tokens": 4}\'.'),
    ]
    opts += plugin_engine_options()
    for opt in reversed(opts):
        f = opt(f)
    return f


def plugin_engine_options() -> list[Callable[..., Any]]:
    """A flag per field of every plugin's engine-argument section (``register_engine_args``):
    ``max_loras`` -> ``--max-loras``; booleans are ``--x/--no-x`` switches, lists repeat, dicts
    are JSON objects (``--limit-mm-per-prompt '{"image": 2}'``)."""
    from vllm_core.plugins import registry

    opts = []
    for _, section in registry.engine_args().items():
        for field_name, info in section.model_fields.items():
            flag = "--" + field_name.replace("_", "-")
            help_text = (info.description or "").split("\n")[0] or None
            annotation = info.annotation
            inner = [a for a in typing.get_args(annotation) if a is not type(None)]
            if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(inner) == 1:
                annotation = inner[0]  # X | None: the flag of X
            if annotation is bool:
                opts.append(click.option(f"{flag}/--no-{flag[2:]}", field_name, default=None, help=help_text))
            elif annotation is int:
                opts.append(click.option(flag, field_name, type=int, default=None, help=help_text))
            elif annotation is float:
                opts.append(click.option(flag, field_name, type=float, default=None, help=help_text))
            elif typing.get_origin(annotation) is dict or annotation is dict:
                opts.append(click.option(flag, field_name, default=None, help=help_text, callback=_json_option))
            elif typing.get_origin(annotation) in (list, tuple):
                opts.append(click.option(flag, field_name, multiple=True, default=None, help=help_text,
                                         callback=lambda c, p, v: list(v) or None))
            else:
                opts.append(click.option(flag, field_name, default=None, help=help_text))
    return opts


def engine_keys() -> tuple[str, ...]:
    """The keyword arguments the engine flags fill: the core's and the plugins' sections'."""
    from vllm_core.plugins import registry

    return ENGINE_KEYS + tuple(n for _, s in registry.engine_args().items() for n in s.model_fields)


ENGINE_KEYS = (
    "tokenizer", "dtype", "max_model_len", "max_num_seqs", "max_num_batched_tokens",
    "enable_prefix_caching", "block_size", "seed", "load_format", "device",
    "kv_cache_memory_bytes", "num_gpu_blocks_override", "tensor_parallel_size", "pipeline_parallel_size",
    "distributed_executor_backend", "distributed_timeout_s", "speculative_config",
)


def _json_option(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """A JSON object flag (vLLM's ``--speculative-config '{...}'``)."""
    import json

    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc.msg} at column {exc.colno}): {value!r}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(f"must be a JSON object, got {value!r}")
    return parsed


def make_llm(model: str | None, kwargs: dict[str, Any]) -> Any:
    """Build an ``LLM`` from the shared flags; engine errors become click errors."""
    from vllm_core.entrypoints.llm import LLM
    from vllm_core.errors import EngineError

    engine_kwargs = {k: kwargs.pop(k) for k in engine_keys() if k in kwargs}
    try:
        return LLM(model, **engine_kwargs)
    except EngineError as exc:
        raise click.ClickException(str(exc)) from exc
