"""LoRA fixtures: tiny random Llama and Qwen3 bases with PEFT adapters (``init_lora_weights=False``,
so B is not zero and every adapter changes the output), and the PEFT oracle."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from tests.conftest import hf_greedy, import_or_require, save_tiny_model

# read when a kernel is decorated: set before vllm_lora's Triton module is imported (no GPU here)
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import_or_require("vllm_lora", "lora")
import_or_require("peft", "lora")


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    rank: int
    alpha: int
    targets: Any
    rslora: bool = False


ADAPTERS = (
    AdapterSpec("qv8", 8, 16, ["q_proj", "v_proj"]),
    AdapterSpec("all16", 16, 32, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], True),
    AdapterSpec("mlp4", 4, 8, r"(.*\.(embed_tokens|o_proj|down_proj|gate_proj))|lm_head"),
    AdapterSpec("ku32", 32, 16, ["k_proj", "up_proj", "embed_tokens"]),
)
"""Different ranks (4 .. 32), target sets (attention only, MLP, the input embedding and the
output projection by regex,
all seven projections, the embedding by name) and scalings (rsLoRA on one)."""


def save_adapter(base: Any, spec: AdapterSpec, path: str, seed: int) -> None:
    """A PEFT adapter with random A and B on a copy of ``base``, saved with safetensors."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=spec.rank, lora_alpha=spec.alpha, target_modules=spec.targets, use_rslora=spec.rslora,
                     init_lora_weights=False, lora_dropout=0.0, bias="none")
    model = get_peft_model(copy.deepcopy(base), cfg)
    with torch.no_grad():  # PEFT's non-default init leaves B small: make each adapter matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.2)
            elif "lora_embedding_B" in name:  # A is N(0, 1) for the embedding: keep its delta O(0.1)
                p.normal_(0.0, 0.02)
    model.save_pretrained(path, safe_serialization=True)


def peft_greedy(base: Any, adapter_dir: str | None, prompt: list[int], max_tokens: int) -> list[int]:
    """The oracle: PeftModel (or the base model) greedy generate."""
    from peft import PeftModel

    if adapter_dir is None:
        return hf_greedy(base, prompt, max_tokens)
    model = PeftModel.from_pretrained(copy.deepcopy(base), adapter_dir)
    model.eval()
    return hf_greedy(model, prompt, max_tokens)


@pytest.fixture(scope="session")
def lora_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Any, dict[str, str]]]:
    """arch -> (base checkpoint dir, transformers base model, adapter name -> adapter dir)."""
    out = {}
    for arch in ("llama", "qwen3"):
        path = str(tmp_path_factory.mktemp(f"lora-base-{arch}"))
        base = save_tiny_model(arch, path)
        adapters = {}
        for i, spec in enumerate(ADAPTERS):
            adir = str(tmp_path_factory.mktemp(f"lora-{arch}-{spec.name}"))
            save_adapter(base, spec, adir, seed=100 + i)
            adapters[spec.name] = adir
        out[arch] = (path, base, adapters)
    return out
