"""Each tensor-parallel rank reads only its shard of every split weight from the checkpoint
(bytes counted by the loader), and the shards are the right rows / columns of the transformers
weights. No collective runs while a model is built and loaded, so the ranks are built here in
one process with a ``Communicator`` that only knows its place (any collective would raise)."""

from __future__ import annotations

import glob
import os

import pytest
import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from vllm_core.attention.backends.reference import ReferenceAttentionBackend
from vllm_core.distributed import Communicator, ParallelContext
from vllm_core.model_executor.model_loader.hf import SafetensorsLoader
from vllm_core.model_executor.models.interface import ModelContext
from vllm_core.model_executor.models.llama import LlamaForCausalLM
from vllm_core.platforms.ops import NATIVE_OPS


def build_rank(path: str, hf_config, rank: int, tp: int) -> tuple[LlamaForCausalLM, int]:  # type: ignore[no-untyped-def]
    parallel = ParallelContext(rank, tp, tp=Communicator(list(range(tp)), rank))
    ctx = ModelContext(NATIVE_OPS, ReferenceAttentionBackend, 256, parallel)
    with torch.device("cpu"):
        model = LlamaForCausalLM(hf_config, ctx)
    loader = SafetensorsLoader()
    with torch.no_grad():
        loader.load_weights(model, path, torch.float32, tqdm(disable=True))
    return model, loader.bytes_read[0]


def checkpoint_bytes(path: str) -> dict[str, int]:
    out = {}
    for f in glob.glob(os.path.join(path, "*.safetensors")):
        with safe_open(f, framework="pt") as st:
            for name in st.keys():
                t = st.get_slice(name)
                out[name] = int(torch.tensor(t.get_shape()).prod()) * 4
    return out


@pytest.mark.parametrize("which", ["llama", "kv1"])
def test_each_rank_reads_its_shard(tiny_models, kv1_model, which: str) -> None:  # type: ignore[no-untyped-def]
    path, hf = tiny_models["llama"] if which == "llama" else kv1_model
    sizes = checkpoint_bytes(path)
    total = sum(sizes.values())
    vocab, hidden = hf.config.vocab_size, hf.config.hidden_size
    rows = -(-vocab // 2)  # the vocabulary padded to a multiple of 2, split

    def expected(rank: int) -> int:
        n = 0
        for name, size in sizes.items():
            if "norm" in name or (which == "kv1" and (".k_proj." in name or ".v_proj." in name)):
                n += size  # replicated: norms, and the one KV head every rank holds
            elif name in ("model.embed_tokens.weight", "lm_head.weight"):
                n += min(rows, vocab - rank * rows) * hidden * 4
            else:
                n += size // 2
        return n

    hf_params = dict(hf.named_parameters())
    for rank in range(2):
        model, read = build_rank(path, hf.config, rank, 2)
        assert read == expected(rank) < 0.6 * total, f"rank {rank} read {read} of {total} bytes"
        attn = model.model.layers[1].self_attn
        q = attn.q_size
        want_q = hf_params["model.layers.1.self_attn.q_proj.weight"][rank * q:(rank + 1) * q]
        torch.testing.assert_close(attn.qkv_proj.weight[:q], want_q, rtol=0, atol=0)
        kv = attn.kv_size
        kv_owner = rank if which == "llama" else 0
        want_k = hf_params["model.layers.1.self_attn.k_proj.weight"][kv_owner * kv:(kv_owner + 1) * kv]
        torch.testing.assert_close(attn.qkv_proj.weight[q:q + kv], want_k, rtol=0, atol=0)
        cols = attn.o_proj.weight.shape[1]
        want_o = hf_params["model.layers.1.self_attn.o_proj.weight"][:, rank * cols:(rank + 1) * cols]
        torch.testing.assert_close(attn.o_proj.weight, want_o, rtol=0, atol=0)
        embed = model.model.embed_tokens
        assert embed is not None
        want_e = hf_params["model.embed_tokens.weight"][rank * rows:(rank + 1) * rows]
        torch.testing.assert_close(embed.weight[: want_e.shape[0]], want_e, rtol=0, atol=0)
        assert not embed.weight[want_e.shape[0]:].any(), "padding rows must be zero"


def test_gguf_rows_read_alone_equal_the_whole_tensors_rows(default_model_path: str) -> None:
    """A rank's rows of a GGUF tensor (quantized or not, rope-permuted q/k at head boundaries)
    dequantized alone equal the same rows of the whole tensor, from fewer file bytes."""
    from vllm_core.model_executor.model_loader.gguf_weights import iter_gguf_lazy_weights

    counter = [0]
    weights = dict(iter_gguf_lazy_weights(default_model_path, torch.float32, counter))
    head_dim = 64  # SmolLM2-135M: 9 heads, 3 KV heads of 64
    cases = {
        "model.layers.3.self_attn.q_proj.weight": (3 * head_dim, 3 * head_dim),
        "model.layers.3.self_attn.k_proj.weight": (1 * head_dim, 1 * head_dim),
        "model.layers.3.mlp.gate_proj.weight": (768, 768),
        "model.embed_tokens.weight": (24576, 24576),
    }
    for name, (start, length) in cases.items():
        w = weights[name]
        counter[0] = 0
        part = w.narrow(0, start, length)
        part_bytes = counter[0]
        whole = w.materialize()
        assert part_bytes < counter[0] - part_bytes, f"{name}: the slice read as much as the whole"
        torch.testing.assert_close(part, whole.narrow(0, start, length), rtol=0, atol=0, msg=name)
