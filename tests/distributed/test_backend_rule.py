"""vLLM's rule for the executor backend when none is given, and the device-count check."""

from __future__ import annotations

import sys
import types

import pytest

from vllm_core.entrypoints.llm import build_engine_config
from vllm_core.errors import ConfigError
from vllm_core.executor import resolve_backend
from vllm_core.platforms.reference import ReferencePlatform


class TwoDevicePlatform(ReferencePlatform):
    """A node with two devices (as a 2-GPU machine reports them)."""

    def device_count(self) -> int | None:
        return 2


def backend(platform: ReferencePlatform, **parallel: object) -> str:
    return resolve_backend(build_engine_config("unused", **parallel), platform)


def test_default_backend_follows_vllms_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    node = TwoDevicePlatform()
    assert backend(node) == "uni"
    assert backend(node, tensor_parallel_size=2) == "mp"
    assert backend(node, tensor_parallel_size=2, pipeline_parallel_size=2) == "ray", "world > the node's devices"
    assert backend(ReferencePlatform(), tensor_parallel_size=4) == "mp", "CPU ranks are processes: no limit"
    initialised = types.SimpleNamespace(is_initialized=lambda: True)
    monkeypatch.setitem(sys.modules, "ray", initialised)
    assert backend(node, tensor_parallel_size=2) == "ray", "a Ray cluster is initialised"
    assert backend(node, tensor_parallel_size=2, distributed_executor_backend="mp") == "mp"


def test_mp_world_larger_than_the_node_is_refused() -> None:
    with pytest.raises(ConfigError, match="4 ranks, but this node has 2 reference devices.*'ray' across nodes"):
        backend(TwoDevicePlatform(), tensor_parallel_size=4, distributed_executor_backend="mp")
