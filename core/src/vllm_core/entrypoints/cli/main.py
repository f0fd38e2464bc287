"""``vllm-core``: generate, chat, plugins, bench (and commands plugins add via ``register_commands``)."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import click

from vllm_core.benchmarks.cli import bench
from vllm_core.entrypoints.cli.options import engine_options, make_llm
from vllm_core.entrypoints.cli.serve import serve


@click.group()
@click.version_option(package_name="vllm-core")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
def cli(log_level: str) -> None:
    """vllm-core: a vLLM-class LLM inference engine."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _sampling(max_tokens: int, temperature: float, top_p: float, top_k: int, seed: int | None) -> Any:
    from vllm_core.errors import SamplingParamsError
    from vllm_core.sampling_params import SamplingParams

    try:
        return SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
    except SamplingParamsError as exc:
        raise click.BadParameter(str(exc)) from exc


def sampling_options(f: Any) -> Any:
    f = click.option("--max-tokens", type=int, default=128, show_default=True)(f)
    f = click.option("--temperature", type=float, default=0.0, show_default=True)(f)
    f = click.option("--top-p", type=float, default=1.0, show_default=True)(f)
    f = click.option("--top-k", type=int, default=0, show_default=True)(f)
    f = click.option("--sample-seed", type=int, default=None, help="Per-request sampling seed.")(f)
    return f


@cli.command()
@click.argument("prompt", nargs=-1)
@engine_options
@sampling_options
@click.option("--chat-format/--raw", default=None,
              help="Wrap each prompt in the chat template (default: when the model has one).")
def generate(prompt: tuple[str, ...], model: str | None, max_tokens: int, temperature: float, top_p: float,
             top_k: int, sample_seed: int | None, chat_format: bool | None, **kwargs: Any) -> None:
    """Generate a completion for each PROMPT (read from stdin when none is given)."""
    prompts = list(prompt) or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not prompts:
        raise click.UsageError("give at least one prompt (argument or stdin)")
    params = _sampling(max_tokens, temperature, top_p, top_k, sample_seed)
    llm = make_llm(model, kwargs)
    from vllm_core.errors import RequestError

    if chat_format is None:
        chat_format = bool(getattr(llm.get_tokenizer(), "chat_template", None))
    try:
        if chat_format:
            outs = llm.chat([[{"role": "user", "content": p}] for p in prompts], params, use_tqdm=False)
        else:
            outs = llm.generate(prompts, params, use_tqdm=len(prompts) > 1)
    except RequestError as exc:
        raise click.ClickException(str(exc)) from exc
    for p, out in zip(prompts, outs):
        if len(prompts) > 1:
            click.echo(f"### {p}")
        click.echo(p + out.outputs[0].text if not chat_format else out.outputs[0].text)


@cli.command()
@engine_options
@sampling_options
@click.option("--system", default=None, help="System prompt.")
def chat(model: str | None, max_tokens: int, temperature: float, top_p: float, top_k: int,
         sample_seed: int | None, system: str | None, **kwargs: Any) -> None:
    """Interactive chat; tokens stream to the terminal. Empty line or Ctrl-D quits."""
    from vllm_core.entrypoints.cli.chat import run_chat

    params = _sampling(max_tokens, temperature, top_p, top_k, sample_seed)
    llm = make_llm(model, kwargs)
    run_chat(llm, params, system)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """Installed plugins, their hooks, every platform probe and which platform wins."""
    from vllm_core.entrypoints.cli.plugins_report import plugins_report

    report = plugins_report()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"plugin API: {report['plugin_api_version']}")
    click.echo("plugins:")
    for p in report["plugins"]:
        api = "declares no API range" if p["api_range"] is None else (
            f"API {p['api_range']}: " + ("matches" if p["api_compatible"] else "does not match"))
        click.echo(f"  {p['name']:<10} {p['distribution']} {p['version']}  ({p['module']}; {api})")
        click.echo(f"             hooks: {', '.join(p['hooks']) or '-'}")
    click.echo("platforms (best first):")
    for pr in report["platforms"]:
        state = "available" if pr["available"] else f"unavailable: {pr['reason']}"
        click.echo(f"  {pr['name']:<10} priority {pr['priority']:<3} {pr['distribution']:<10} {state}")
    click.echo(f"selected platform: {report['selected']}")
    for kind in ("attention_backends", "samplers", "model_loaders", "models", "tool_parsers", "reasoning_parsers",
                 "runner_extensions", "proposers"):
        click.echo(f"{kind}: {', '.join(report[kind]) or '-'}")


cli.add_command(bench)
cli.add_command(serve)


def build_cli() -> click.Group:
    """The CLI group with plugin commands added through ``register_commands``."""
    from vllm_core.errors import EngineError
    from vllm_core.plugins import get_plugin_manager

    try:
        get_plugin_manager().hook.register_commands(cli=cli)
    except EngineError as exc:
        raise click.ClickException(str(exc)) from exc
    return cli


def main() -> None:
    try:
        group = build_cli()
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    group()


if __name__ == "__main__":
    main()
