"""The CPU plugin: discovery, platform choice, backend choice, thread setup."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch

from tests.conftest import import_or_require
from vllm_core.errors import ConfigError
from vllm_core.platforms import ENV_DEVICE, probe_platforms, resolve_platform
from vllm_core.plugins import loaded_plugins, reset_plugin_manager

import_or_require("vllm_cpu", "cpu")

from vllm_cpu.attention import CPUAttentionBackend  # noqa: E402
from vllm_cpu.ops import CPUOps  # noqa: E402
from vllm_cpu.platform import ENV_NUM_THREADS, CPUPlatform  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Plugins reloaded from entry points with no allow-list and no forced device."""
    for var in (ENV_DEVICE, "VLLM_CORE_PLUGINS", "VLLM_CORE_DISABLE_PLUGIN_AUTOLOAD", ENV_NUM_THREADS):
        monkeypatch.delenv(var, raising=False)
    reset_plugin_manager()
    yield
    monkeypatch.undo()
    reset_plugin_manager()


@pytest.fixture
def restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_plugin_is_discovered_from_its_entry_point() -> None:
    info = next(p for p in loaded_plugins() if p.name == "cpu")
    assert info.distribution == "vllm-cpu"
    assert info.module == "vllm_cpu.plugin"
    assert set(info.hooks) == {
        "register_attention_backends", "register_platforms", "register_samplers", "register_engine_args",
        "register_runner_extensions",
    }


def test_plugin_module_imports_nothing_heavy() -> None:
    code = "import sys, vllm_cpu.plugin; print(sorted(m for m in sys.modules if m.startswith('vllm_cpu')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['vllm_cpu', 'vllm_cpu.plugin']"


def test_cpu_wins_over_reference_when_installed() -> None:
    probes = probe_platforms()
    names = [p.name for p in probes]  # other installed plugins (acme) may rank in between
    assert names[0] == "cpu" and names.index("reference") > 0
    assert probes[0].available and probes[0].distribution == "vllm-cpu"
    platform = resolve_platform()
    assert isinstance(platform, CPUPlatform)
    assert isinstance(platform.ops, CPUOps)


def test_env_device_forces_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_DEVICE, "reference")
    assert resolve_platform().name == "reference"
    assert resolve_platform("cpu").name == "cpu"  # an explicit device beats the environment


def test_disabled_autoload_leaves_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLLM_CORE_DISABLE_PLUGIN_AUTOLOAD", "1")
    reset_plugin_manager()
    assert resolve_platform().name == "reference"


def test_attention_backend_choice_by_capability() -> None:
    cpu = resolve_platform("cpu")
    reference = resolve_platform("reference")
    for dtype in (torch.float32, torch.bfloat16):
        assert cpu.select_attention_backend(128, dtype) is CPUAttentionBackend
        assert reference.select_attention_backend(128, dtype).name == "reference"
    assert cpu.select_attention_backend(64, torch.float32, forced="reference").name == "reference"


def test_memory_info_is_sane() -> None:
    free, total = CPUPlatform().memory_info()
    assert 0 < free <= total


def test_threads_default_to_every_usable_core() -> None:
    assert CPUPlatform().num_threads() == len(os.sched_getaffinity(0))


def test_threads_honour_num_threads_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_NUM_THREADS, "3")
    assert CPUPlatform().num_threads() == 3


def test_setup_leaves_torch_one_thread_when_the_kernels_run(restore_threads: None) -> None:
    platform = CPUPlatform()
    torch.set_num_threads(2)
    platform.setup()
    kernels = platform.ops.kernels  # type: ignore[attr-defined]
    assert torch.get_num_threads() == (1 if kernels is not None else platform.num_threads())


def test_kernel_pool_takes_num_threads_env() -> None:
    code = "from vllm_cpu.platform import CPUPlatform; k = CPUPlatform().ops.kernels; print(k and k.num_threads)"
    env = {**os.environ, ENV_NUM_THREADS: "3"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() in ("3", "None")


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_setup_rejects_bad_num_threads(
    monkeypatch: pytest.MonkeyPatch, restore_threads: None, value: str
) -> None:
    monkeypatch.setenv(ENV_NUM_THREADS, value)
    with pytest.raises(ConfigError, match=ENV_NUM_THREADS):
        CPUPlatform().setup()


def test_cpu_sampler_equals_the_reference_sampler() -> None:
    """The platform's sampler (argmax on the C kernels) gives the reference sampler's tokens:
    greedy rows, seeded and unseeded random rows, with top-k / top-p filters, in one batch."""
    from vllm_core.core.sched_output import ScheduledRequest
    from vllm_core.plugins import registry
    from vllm_core.sample.metadata import SamplingMetadata
    from vllm_core.sample.sampler import ReferenceSampler
    from vllm_core.sampling_params import SamplingParams
    from vllm_cpu.platform import CPUPlatform

    platform = CPUPlatform()
    sampler = registry.samplers().get(platform.sampler_name())()
    assert type(sampler).__name__ == "CPUSampler"
    params = [SamplingParams(temperature=0), SamplingParams(temperature=0.8, seed=7),
              SamplingParams(temperature=1.0, top_k=20), SamplingParams(temperature=0.7, top_p=0.9),
              SamplingParams(temperature=0)] * 13
    rows = [ScheduledRequest(req_id=str(i), token_ids=[1], start_pos=0, block_ids=[0], sampling_params=p,
                             sample=True, num_output_tokens=0, eos_token_id=None) for i, p in enumerate(params)]
    logits = torch.randn(len(rows), 3001, generator=torch.Generator().manual_seed(0)) * 4
    out = []
    for s in (sampler, ReferenceSampler()):
        gens = {i: torch.Generator().manual_seed(100 + i) for i, p in enumerate(params) if p.seed is not None}
        meta = SamplingMetadata.build(rows, gens, torch.device("cpu"))
        out.append(s(logits.clone(), meta, torch.Generator().manual_seed(1)))
    assert torch.equal(out[0], out[1])
    greedy = [i for i, p in enumerate(params) if p.temperature == 0]
    assert torch.equal(out[0][greedy], logits[greedy].argmax(dim=-1))


def test_cpu_sampler_argmax_of_half_precision_logits_is_torchs() -> None:
    """Greedy verification hands the sampler's ``argmax`` the logits in the model's dtype: bf16 /
    fp16 rows (ties, a NaN) give torch's argmax, through the kernel on the widened values."""
    from vllm_core.plugins import registry
    from vllm_cpu.platform import CPUPlatform

    sampler = registry.samplers().get(CPUPlatform().sampler_name())()
    logits = torch.randn(5, 3001, generator=torch.Generator().manual_seed(0)) * 4
    logits[1, 7] = logits[1, 900] = 100.0  # a tie: the first one
    logits[3, 42] = float("nan")  # a NaN counts as largest
    for dtype in (torch.bfloat16, torch.float16):
        x = logits.to(dtype)
        assert torch.equal(sampler.argmax(x), x.argmax(dim=-1))
