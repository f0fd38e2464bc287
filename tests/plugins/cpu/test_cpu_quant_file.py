"""K-quant (Q4_K, Q6_K) linear layers read from a GGUF file and kept packed by
``vllm_cpu.gguf_quant.quantize_model``: fused q/k/v and gate/up of mixed types (one packed part
per run of one type), the llama rope permutation applied to whole quantized rows, and each
layer's output within the kernel's bound of the file's dequantized weights (``GGUFWeight``'s
dense path, gguf-py's dequantization). A tiny file (hidden 256: K-quant rows are whole
super-blocks of 256) with random blocks and a module tree of the llama names; ~3 s."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from tests.conftest import import_or_require
from tests.plugins.cpu.test_cpu_quant import random_q4k_rows, random_q6k_rows

import_or_require("vllm_cpu", "cpu")

from vllm_core.plugins.api import iter_gguf_lazy_weights  # noqa: E402
from vllm_cpu.gguf_quant import quantize_model  # noqa: E402
from vllm_cpu.ops import CPUOps  # noqa: E402
from vllm_cpu.quant import quantized  # noqa: E402

HIDDEN, INTER, N_HEAD, N_KV, HEAD = 256, 512, 4, 2, 64
TENSORS = {  # GGUF name: (type, rows, cols)
    "blk.0.attn_q.weight": ("Q4_K", N_HEAD * HEAD, HIDDEN),
    "blk.0.attn_k.weight": ("Q6_K", N_KV * HEAD, HIDDEN),
    "blk.0.attn_v.weight": ("Q4_K", N_KV * HEAD, HIDDEN),
    "blk.0.ffn_gate.weight": ("Q4_K", INTER, HIDDEN),
    "blk.0.ffn_up.weight": ("Q4_K", INTER, HIDDEN),
    "blk.0.ffn_down.weight": ("Q6_K", HIDDEN, INTER),
}


class _Tree(torch.nn.Module):
    """The llama module names a GGUF llama maps to, nothing else."""

    stacked_params = [("qkv_proj", "q_proj", 0), ("qkv_proj", "k_proj", 1), ("qkv_proj", "v_proj", 2),
                      ("gate_up_proj", "gate_proj", 0), ("gate_up_proj", "up_proj", 1)]

    def __init__(self) -> None:
        super().__init__()
        layer = torch.nn.Module()
        layer.self_attn = torch.nn.Module()
        layer.self_attn.qkv_proj = torch.nn.Linear(HIDDEN, (N_HEAD + 2 * N_KV) * HEAD, bias=False)
        layer.mlp = torch.nn.Module()
        layer.mlp.gate_up_proj = torch.nn.Linear(HIDDEN, 2 * INTER, bias=False)
        layer.mlp.down_proj = torch.nn.Linear(INTER, HIDDEN, bias=False)
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList([layer])


def _write(path: Path) -> None:
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_KV)
    for name, (qtype, rows, cols) in TENSORS.items():
        raw = (random_q4k_rows if qtype == "Q4_K" else random_q6k_rows)(rows, cols, rng)
        writer.add_tensor(name, raw, raw_dtype=gguf.GGMLQuantizationType[qtype])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_k_quant_layers_from_a_file(tmp_path: Path, kernels: Any) -> None:
    path = tmp_path / "k-quants.gguf"
    _write(path)
    dense = {name: w.materialize() for name, w in iter_gguf_lazy_weights(str(path))}
    model = _Tree()
    packed = quantize_model(model, str(path), kernels.lib)
    attn, mlp = "model.layers.0.self_attn", "model.layers.0.mlp"
    assert sorted(packed) == [f"{mlp}.down_proj", f"{mlp}.gate_up_proj", f"{attn}.qkv_proj"]
    assert packed[f"{attn}.qkv_proj"].qtypes == ("Q4_K", "Q6_K", "Q4_K")  # q, k, v: three runs
    assert packed[f"{mlp}.gate_up_proj"].qtypes == ("Q4_K",)  # gate and up: one run
    assert packed[f"{mlp}.down_proj"].qtypes == ("Q6_K",)
    want = {
        f"{attn}.qkv_proj": torch.cat([dense[f"{attn}.{p}_proj.weight"] for p in ("q", "k", "v")]),
        f"{mlp}.gate_up_proj": torch.cat([dense[f"{mlp}.{p}_proj.weight"] for p in ("gate", "up")]),
        f"{mlp}.down_proj": dense[f"{mlp}.down_proj.weight"],
    }
    ops = CPUOps(kernels)
    modules = dict(model.named_modules())
    g = torch.Generator().manual_seed(1)
    for name, w in want.items():
        weight = modules[name].weight
        assert quantized(weight) is packed[name] and weight.shape == w.shape
        x = torch.randn(5, w.shape[1], generator=g)
        y = ops.linear(x, weight).double()
        ref = x.double() @ w.double().t()
        # int8x2 activations (default): within 1e-4 of |x| @ |W| (the kernel tests' bound is tighter)
        bound = 1e-4 * (x.double().abs() @ w.double().abs().t()) + 1e-6
        assert bool(((y - ref).abs() <= bound).all()), (name, float(((y - ref).abs() / bound).max()))
