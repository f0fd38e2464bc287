"""The click layer of ``vllm-core bench``: parse flags, run a benchmark, print and save results.

Engine and torch imports happen inside the commands so ``vllm-core --help`` stays fast.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from vllm_core.entrypoints.cli.options import engine_keys, engine_options

if TYPE_CHECKING:
    from vllm_core.benchmarks.engine import EngineStart
    from vllm_core.benchmarks.latency import LatencyResult
    from vllm_core.benchmarks.throughput import ThroughputResult

_POSITIVE = click.IntRange(min=1)


def _bench_engine_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The shared engine flags plus ``--enforce-eager`` (unless the shared flags already have it)."""
    f = engine_options(f)
    if "enforce_eager" not in {p.name for p in getattr(f, "__click_params__", [])}:
        f = click.option("--enforce-eager", is_flag=True, default=False,
                         help="Never replay captured graphs (ignored with a warning by engines without it).")(f)
    f = click.option("--save-result", type=click.Path(dir_okay=False), default=None,
                     help="Write the result, environment and all arguments to this JSON file.")(f)
    return f


def _start(model: str | None, kwargs: dict[str, Any]) -> EngineStart:
    """Start the engine from the flags left in ``kwargs``; engine errors become click errors."""
    from vllm_core.benchmarks.engine import start_engine
    from vllm_core.errors import EngineError

    engine_kwargs = {k: kwargs.pop(k) for k in engine_keys() if k in kwargs}
    enforce_eager = bool(engine_kwargs.pop("enforce_eager", False) or kwargs.pop("enforce_eager", False))
    try:
        return start_engine(model, engine_kwargs, enforce_eager)
    except EngineError as exc:
        raise click.ClickException(str(exc)) from exc


def _finish(title: str, kind: str, started: EngineStart, result: ThroughputResult | LatencyResult,
            path: str | None) -> None:
    """Print the table (environment first) and save the JSON with the full arguments to ``path``."""
    from vllm_core.benchmarks.engine import describe_environment
    from vllm_core.benchmarks.report import format_table, save_result

    env = describe_environment(started)
    rows: list[tuple[str, Any]] = [
        ("Platform", env.platform), ("Device", env.device_name), ("Dtype", env.dtype),
        ("Engine start (s)", env.engine_start_seconds),
    ]
    click.echo(format_table(title, rows + result.table_rows()))
    if path:
        args = dict(click.get_current_context().params)
        save_result(path, {"benchmark": kind, **result.to_dict(), "environment": env.to_dict(), "args": args})
        click.echo(f"saved {path}")


@click.group()
def bench() -> None:
    """Benchmark the engine offline (throughput, latency) or a running server (serve), as vLLM's bench."""


def _lengths(name: str, length: int | None, default: int, ratio: float,
             explicit: tuple[int, int] | None) -> tuple[int, int]:
    from vllm_core.benchmarks.datasets import check_range, length_range

    if explicit is not None and length is not None:
        raise click.UsageError(f"give --{name} or --{name}-range, not both")
    try:
        if explicit is not None:
            return check_range(f"--{name}-range", explicit)
        return length_range(length if length is not None else default, ratio)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=f"--{name}-range") from exc


@bench.command()
@click.option("--dataset", "--dataset-name", "dataset", type=click.Choice(["random"]), default="random",
              show_default=True, help="Workload; random: random token ids.")
@click.option("--input-len", type=_POSITIVE, default=None, help="Prompt length (default 1024).")
@click.option("--output-len", type=_POSITIVE, default=None, help="Output length (default 128).")
@click.option("--num-prompts", type=_POSITIVE, default=1000, show_default=True)
@click.option("--random-range-ratio", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.0,
              show_default=True, help="Lengths uniform in [len*(1-r), len*(1+r)].")
@click.option("--input-len-range", type=(_POSITIVE, _POSITIVE), default=None, metavar="LO HI",
              help="Prompt lengths uniform in [LO, HI] (instead of --input-len).")
@click.option("--output-len-range", type=(_POSITIVE, _POSITIVE), default=None, metavar="LO HI",
              help="Output lengths uniform in [LO, HI] (instead of --output-len).")
@click.option("--temperature", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="0 is greedy.")
@_bench_engine_options
def throughput(model: str | None, dataset: str, input_len: int | None, output_len: int | None, num_prompts: int,
               random_range_ratio: float, input_len_range: tuple[int, int] | None,
               output_len_range: tuple[int, int] | None, temperature: float, save_result: str | None,
               **kwargs: Any) -> None:
    """Requests and tokens per second of one generate() over random prompts."""
    from vllm_core.benchmarks.datasets import RandomDataset
    from vllm_core.benchmarks.engine import require_max_model_len
    from vllm_core.benchmarks.throughput import run_throughput, warmup
    from vllm_core.errors import EngineError

    data = RandomDataset(
        _lengths("input-len", input_len, 1024, random_range_ratio, input_len_range),
        _lengths("output-len", output_len, 128, random_range_ratio, output_len_range),
        seed=kwargs.get("seed") or 0,
    )
    started = _start(model, kwargs)
    llm = started.llm
    vocab = llm.llm_engine.loaded.text_config.vocab_size
    try:
        require_max_model_len(llm, data.max_seq_len, "the longest prompt plus output")
        warmup(llm, data, vocab, temperature)
        result = run_throughput(llm, data.sample(num_prompts, vocab), temperature)
    except EngineError as exc:
        raise click.ClickException(str(exc)) from exc
    _finish("Throughput Benchmark Result", "throughput", started, result, save_result)


@bench.command()
@click.option("--input-len", type=_POSITIVE, default=32, show_default=True)
@click.option("--output-len", type=_POSITIVE, default=128, show_default=True)
@click.option("--batch-size", type=_POSITIVE, default=8, show_default=True)
@click.option("--num-iters-warmup", type=click.IntRange(min=0), default=10, show_default=True)
@click.option("--num-iters", type=_POSITIVE, default=30, show_default=True)
@_bench_engine_options
def latency(model: str | None, input_len: int, output_len: int, batch_size: int, num_iters_warmup: int,
            num_iters: int, save_result: str | None, **kwargs: Any) -> None:
    """End-to-end latency of one batch, with time to first token and per output token."""
    from vllm_core.benchmarks.engine import require_max_model_len
    from vllm_core.benchmarks.latency import run_latency
    from vllm_core.errors import EngineError

    seed = kwargs.get("seed") or 0
    started = _start(model, kwargs)
    try:
        require_max_model_len(started.llm, input_len + output_len, "--input-len plus --output-len")
        result = run_latency(started.llm, batch_size, input_len, output_len, num_iters_warmup, num_iters, seed)
    except EngineError as exc:
        raise click.ClickException(str(exc)) from exc
    _finish("Latency Benchmark Result", "latency", started, result, save_result)


@bench.command("serve")
@click.option("--base-url", default=None, help="Server URL (default: http://HOST:PORT).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--endpoint", default="/v1/completions", show_default=True)
@click.option("--model", default=None, help="Served model name (default: the server's first).")
@click.option("--dataset-name", "dataset", type=click.Choice(["random"]), default="random", show_default=True)
@click.option("--num-prompts", type=_POSITIVE, default=1000, show_default=True)
@click.option("--random-input-len", type=_POSITIVE, default=1024, show_default=True)
@click.option("--random-output-len", type=_POSITIVE, default=128, show_default=True)
@click.option("--random-range-ratio", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.0, show_default=True)
@click.option("--random-vocab-size", type=_POSITIVE, default=1000, show_default=True,
              help="Prompt token ids are drawn from [0, N): valid for any model with at least N tokens.")
@click.option("--request-rate", type=float, default=math.inf, show_default=True,
              help="Requests per second, Poisson arrivals; inf sends all at once.")
@click.option("--max-concurrency", type=_POSITIVE, default=None, help="Most requests in flight.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--api-key", default=None, envvar="VLLM_CORE_API_KEY")
@click.option("--ignore-eos/--no-ignore-eos", default=True, show_default=True)
@click.option("--save-result", type=click.Path(dir_okay=False), default=None, help="Write the result JSON here.")
def serve_bench(base_url: str | None, host: str, port: int, endpoint: str, model: str | None, dataset: str,
                num_prompts: int, random_input_len: int, random_output_len: int, random_range_ratio: float,
                random_vocab_size: int, request_rate: float, max_concurrency: int | None, seed: int,
                api_key: str | None, ignore_eos: bool, save_result: str | None) -> None:
    """Load a running server as `vllm bench serve` does: throughput and TTFT / TPOT / ITL / E2EL."""
    import httpx

    from vllm_core.benchmarks.datasets import RandomDataset, length_range
    from vllm_core.benchmarks.report import format_table
    from vllm_core.benchmarks.report import save_result as write
    from vllm_core.benchmarks.serve import ServeBenchConfig, run_serve_benchmark, summarize, table_rows
    from vllm_core.entrypoints.cli.serve import run_event_loop

    if request_rate <= 0:
        raise click.BadParameter("must be > 0 (or inf)", param_hint="--request-rate")
    url = base_url or f"http://{host}:{port}"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    if model is None:
        try:
            models = httpx.get(f"{url}/v1/models", headers=headers, timeout=30).json()["data"]
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            raise click.ClickException(f"cannot list models at {url}/v1/models: {exc}") from exc
        model = models[0]["id"]
    data = RandomDataset(length_range(random_input_len, random_range_ratio),
                         length_range(random_output_len, random_range_ratio), seed=seed)
    cfg = ServeBenchConfig(url, model, endpoint, request_rate, max_concurrency, seed, api_key, ignore_eos)
    requests = data.sample(num_prompts, random_vocab_size)
    cpu_start = time.process_time()
    results, duration = run_event_loop(run_serve_benchmark(cfg, requests))
    summary = summarize(results, duration)
    summary["client_cpu_time"] = time.process_time() - cpu_start  # the client's own cost, start-up left out
    click.echo(format_table("Serving Benchmark Result", table_rows(summary, cfg)))
    if summary["failed"]:
        click.echo(f"errors: {summary['errors']}", err=True)
    if save_result:
        args = dict(click.get_current_context().params)
        write(save_result, {"benchmark": "serve", "model": model, "num_prompts": num_prompts, **summary, "args": args})
        click.echo(f"saved {save_result}")
