"""Every adapter we cannot serve is a clear ``RequestError`` for that request (naming the file,
the value and the fix), and the engine keeps serving the base model and good adapters."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from typing import Any

import pytest
import torch

from tests.plugins.lora.conftest import peft_greedy
from tests.plugins.lora.test_lora_oracle import DEVICES, MAX_TOKENS, make_llm
from vllm_core import LLM, LoRARequest, SamplingParams
from vllm_core.errors import ConfigError, RequestError


def edit_config(**changes: Any) -> Callable[[str], None]:
    def edit(adir: str) -> None:
        p = os.path.join(adir, "adapter_config.json")
        with open(p) as f:
            cfg = json.load(f)
        cfg.update(changes)
        with open(p, "w") as f:
            json.dump(cfg, f)
    return edit


def to_bin(adir: str) -> None:
    from safetensors.torch import load_file

    torch.save(load_file(os.path.join(adir, "adapter_model.safetensors")), os.path.join(adir, "adapter_model.bin"))
    os.remove(os.path.join(adir, "adapter_model.safetensors"))


def add_tensor(name: str, shape: tuple[int, ...]) -> Callable[[str], None]:
    def edit(adir: str) -> None:
        from safetensors.torch import load_file, save_file

        p = os.path.join(adir, "adapter_model.safetensors")
        tensors = load_file(p)
        tensors[name] = torch.zeros(shape)
        save_file(tensors, p)
    return edit


def drop_b(adir: str) -> None:
    from safetensors.torch import load_file, save_file

    p = os.path.join(adir, "adapter_model.safetensors")
    tensors = {k: v for k, v in load_file(p).items() if not k.endswith("layers.0.self_attn.q_proj.lora_B.weight")}
    save_file(tensors, p)


BAD: dict[str, tuple[str, Callable[[str], None] | None, str]] = {
    # case: (adapter to start from, how to break it, what the message must say)
    "rank": ("ku32", None, "exceeds max_lora_rank=16"),
    "bin": ("qv8", to_bin, "pickle"),
    "modules_to_save": ("qv8", edit_config(modules_to_save=["lm_head"]), "modules_to_save"),
    "target_list": ("qv8", edit_config(target_modules=["q_proj", "rotary_emb"]), "'rotary_emb' not supported"),
    "extra_vocab": ("qv8", edit_config(trainable_token_indices=[3, 5]), "extra or retrained vocabulary"),
    "target_regex": ("qv8", edit_config(target_modules=r".*rotary_emb"), "matches no supported module"),
    "bias": ("qv8", edit_config(bias="all"), "bias='all'"),
    "dora": ("qv8", edit_config(use_dora=True), "use_dora"),
    "rank_pattern": ("qv8", edit_config(rank_pattern={"q_proj": 4}), "rank_pattern"),
    "unsupported_tensor": ("qv8", add_tensor("base_model.model.model.norm.lora_A.weight", (8, 64)), "model.norm"),
    "head_extra_vocab": ("mlp4", add_tensor("base_model.model.lm_head.lora_B.weight", (516, 4)), "extra vocabulary"),
    "missing_b": ("qv8", drop_b, "only lora_A"),
    # an embedding LoRA over a resized vocabulary (tiny models: 512 tokens, hidden 64)
    "extra_vocab_rows": ("qv8", add_tensor("base_model.model.model.embed_tokens.base_layer.weight", (516, 64)),
                         "extra vocabulary are not supported"),
    "extra_vocab_lora": ("qv8", add_tensor("base_model.model.model.embed_tokens.lora_embedding_A", (8, 516)),
                         "has shape (8, 516), the base model needs (8, 512)"),
    "not_json": ("qv8", lambda d: open(os.path.join(d, "adapter_config.json"), "w").write("{"), "not valid JSON"),
}


@pytest.fixture(scope="module")
def llm(lora_models: dict[str, Any]) -> LLM:
    path, _, _ = lora_models["llama"]
    return make_llm(path, DEVICES[0], max_lora_rank=16, max_cpu_loras=2)


def check_still_serves(llm: LLM, lora_models: dict[str, Any]) -> None:
    path, base, adapters = lora_models["llama"]
    prompt = [5, 6, 7, 8, 9]
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    good = LoRARequest("qv8", 1, adapters["qv8"])
    outs = llm.generate([{"prompt_token_ids": prompt}] * 2, params, use_tqdm=False, lora_request=[None, good])
    assert list(outs[0].outputs[0].token_ids) == peft_greedy(base, None, prompt, MAX_TOKENS)
    assert list(outs[1].outputs[0].token_ids) == peft_greedy(base, adapters["qv8"], prompt, MAX_TOKENS)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_adapter_is_a_clear_error(llm: LLM, lora_models: dict[str, Any], tmp_path: Any, case: str) -> None:
    _, _, adapters = lora_models["llama"]
    start, breaker, expected = BAD[case]
    adir = str(tmp_path / case)
    shutil.copytree(adapters[start], adir)
    if breaker is not None:
        breaker(adir)
    with pytest.raises(RequestError) as info:
        llm.generate({"prompt_token_ids": [1, 2, 3]}, SamplingParams(max_tokens=2), use_tqdm=False,
                     lora_request=LoRARequest("bad", 9, adir))
    assert expected in str(info.value) and adir in str(info.value), str(info.value)
    check_still_serves(llm, lora_models)


def test_adapter_of_another_model_is_a_shape_error(llm: LLM, lora_models: dict[str, Any]) -> None:
    """A Qwen3 adapter (head_dim 32) on the Llama base: the first mismatching tensor is named."""
    _, _, qwen_adapters = lora_models["qwen3"]
    with pytest.raises(RequestError, match=r"has shape \(\d+, \d+\), the base model needs"):
        llm.generate({"prompt_token_ids": [1, 2, 3]}, SamplingParams(max_tokens=2), use_tqdm=False,
                     lora_request=LoRARequest("other", 9, qwen_adapters["qv8"]))
    check_still_serves(llm, lora_models)


def test_missing_directory_and_wrong_type(llm: LLM, tmp_path: Any) -> None:
    with pytest.raises(RequestError, match="not found or not a directory"):
        llm.generate({"prompt_token_ids": [1, 2]}, use_tqdm=False,
                     lora_request=LoRARequest("x", 1, str(tmp_path / "nope")))
    with pytest.raises(RequestError, match="must be a LoRARequest"):
        llm.generate({"prompt_token_ids": [1, 2]}, use_tqdm=False, lora_request="sql")  # type: ignore[arg-type]
    with pytest.raises(RequestError, match="got 1 values of lora_request for 2 prompts"):
        llm.generate([{"prompt_token_ids": [1, 2]}] * 2, use_tqdm=False, lora_request=[None])


def test_lora_request_without_enable_lora(lora_models: dict[str, Any]) -> None:
    path, _, adapters = lora_models["llama"]
    llm = make_llm(path, DEVICES[0], enable_lora=False)
    with pytest.raises(RequestError, match="enable_lora=True"):
        llm.generate({"prompt_token_ids": [1, 2]}, use_tqdm=False, lora_request=LoRARequest("a", 1, adapters["qv8"]))
    assert llm.llm_engine.core.runner.extensions.get("lora") is None


def test_engine_argument_errors(lora_models: dict[str, Any]) -> None:
    path, _, _ = lora_models["llama"]
    with pytest.raises(ConfigError, match=r"max_cpu_loras \(1\) must be at least max_loras \(2\)"):
        make_llm(path, DEVICES[0], max_loras=2, max_cpu_loras=1)
    with pytest.raises(ConfigError, match="max_loras"):
        make_llm(path, DEVICES[0], max_loras=0)
