"""Engine flags shared by every command that loads a model, with vLLM's names."""

from __future__ import annotations

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
    for opt in reversed(opts):
        f = opt(f)
    return f


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

    engine_kwargs = {k: kwargs.pop(k) for k in ENGINE_KEYS if k in kwargs}
    try:
        return LLM(model, **engine_kwargs)
    except EngineError as exc:
        raise click.ClickException(str(exc)) from exc
