"""vLLM's LoRA flags on the CLI come from the plugin's engine-argument section."""

from __future__ import annotations

from typing import Any

import click
from click.testing import CliRunner
from vllm_lora.config import LoRAConfig
from vllm_lora.server import parse_lora_module

from vllm_core.entrypoints.cli.options import engine_keys, engine_options
from vllm_core.entrypoints.llm import build_engine_config


def test_lora_flags_reach_the_engine_config() -> None:
    seen: dict[str, Any] = {}

    @click.command()
    @engine_options
    def cmd(**kwargs: Any) -> None:
        seen.update({k: kwargs[k] for k in engine_keys() if k in kwargs})

    result = CliRunner().invoke(cmd, ["--enable-lora", "--max-loras", "3", "--max-lora-rank", "32",
                                      "--max-cpu-loras", "5", "--lora-modules", "sql=/a",
                                      "--lora-modules", '{"name": "chat", "path": "/b"}'])
    assert result.exit_code == 0, result.output
    cfg = build_engine_config("m", **seen).plugin_config(LoRAConfig)
    assert cfg is not None and cfg.enable_lora and (cfg.max_loras, cfg.max_lora_rank, cfg.cpu_capacity) == (3, 32, 5)
    assert [parse_lora_module(m) for m in cfg.lora_modules or []] == [("sql", "/a", None), ("chat", "/b", None)]
