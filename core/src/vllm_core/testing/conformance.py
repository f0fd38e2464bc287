"""Conformance tests a platform runs against the reference platform.

Three pytest classes to subclass in a backend's test module (see ``vllm_core.testing``):

- ``AttentionConformance``: the platform's selected attention backend vs the reference backend
  on identical copies of a random paged KV cache, over GQA ratios, head sizes, block sizes,
  dtypes and batch shapes (prefill, decode, mixed with a chunk that starts mid-sequence,
  prefix-cache hits on shared blocks); compares the outputs and the written caches.
- ``OpsConformance``: ``platform.ops`` vs the native ``Ops``.
- ``EndToEndConformance``: greedy tokens of a tiny random Llama through ``LLM`` equal the
  reference platform's.

Each class takes the platform from the ``conformance_platform`` fixture (``vllm_core.testing.plugin``
resolves it from ``--vllm-platform``; a test class may override it). The helpers
(``make_attention_batch``, ``check_attention_against_reference``, ``make_tiny_llama``, ...) are
public for vendors' own tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import pytest
import torch

from vllm_core.attention.backends.reference import ReferenceAttentionBackend
from vllm_core.attention.metadata import AttentionMetadata
from vllm_core.platforms.interface import Platform
from vllm_core.platforms.ops import NATIVE_OPS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (1e-2, 1.6e-2),
    torch.float16: (1e-3, 1e-3),
}
"""(atol, rtol) per dtype: outputs of the platform vs the reference."""


def assert_close_to_reference(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """``actual`` (any device) matches ``expected`` within ``TOLERANCES[expected.dtype]``."""
    atol, rtol = TOLERANCES[expected.dtype]

    def message(detail: str) -> str:
        return f"{what} differs from the reference:\n{detail}"

    torch.testing.assert_close(actual.cpu(), expected, atol=atol, rtol=rtol, msg=message)


def skip_unless_supported(platform: Platform, dtype: torch.dtype) -> None:
    if dtype not in platform.supported_dtypes():
        pytest.skip(f"platform {platform.name!r} does not support {dtype}")


# ---------------------------------------------------------------------------------- attention
@dataclass
class AttentionBatch:
    """One attention call's inputs, built by hand (no scheduler, no model)."""

    query: torch.Tensor
    """[T, num_heads, head_size]; T counts the padding tokens past ``metadata.num_tokens``."""
    key: torch.Tensor
    """[T, num_kv_heads, head_size]"""
    value: torch.Tensor
    """[T, num_kv_heads, head_size]"""
    kv_cache: torch.Tensor
    """[2, num_blocks, block_size, num_kv_heads, head_size], context already written, the rest
    random (garbage a backend must never read)."""
    metadata: AttentionMetadata
    scale: float

    @property
    def num_heads(self) -> int:
        return self.query.shape[1]

    @property
    def num_kv_heads(self) -> int:
        return self.key.shape[1]

    @property
    def head_size(self) -> int:
        return self.query.shape[2]

    def to(self, device: torch.device | str) -> AttentionBatch:
        """A deep copy on ``device`` (every tensor cloned, so backends never share storage)."""
        md = self.metadata
        moved = {
            f.name: getattr(md, f.name).to(device).clone()
            for f in fields(md)
            if isinstance(getattr(md, f.name), torch.Tensor)
        }
        return AttentionBatch(
            query=self.query.to(device).clone(),
            key=self.key.to(device).clone(),
            value=self.value.to(device).clone(),
            kv_cache=self.kv_cache.to(device).clone(),
            metadata=replace(md, **moved),
            scale=self.scale,
        )


def make_attention_batch(
    query_lens: Sequence[int],
    context_lens: Sequence[int],
    *,
    num_heads: int,
    num_kv_heads: int,
    head_size: int,
    block_size: int,
    dtype: torch.dtype = torch.float32,
    shared_prefix_blocks: int = 0,
    num_padding_tokens: int = 0,
    num_spare_blocks: int = 3,
    seed: int = 0,
) -> AttentionBatch:
    """A random ragged batch on a random paged KV cache, in scheduler order.

    Request ``i`` has ``context_lens[i]`` tokens already in the cache and ``query_lens[i]`` new
    ones (written by the backend at ``slot_mapping``). Leading one-token rows count as decodes.
    Blocks are a random permutation (tables are not contiguous); the first
    ``shared_prefix_blocks`` blocks of every request are the same physical blocks, as after
    prefix-cache hits. ``num_padding_tokens`` extra tokens with slot -1 follow the last request
    (padded batches); their outputs are unspecified.
    """
    if len(query_lens) != len(context_lens) or not query_lens:
        raise ValueError("query_lens and context_lens must be non-empty and of equal length")
    if min(query_lens) < 1 or min(context_lens) < 0:
        raise ValueError(f"query_lens must be >= 1 and context_lens >= 0: {query_lens}, {context_lens}")
    if shared_prefix_blocks * block_size > min(context_lens):
        raise ValueError(f"{shared_prefix_blocks} shared blocks need every context >= "
                         f"{shared_prefix_blocks * block_size} tokens: {context_lens}")
    gen = torch.Generator().manual_seed(seed)
    seq_lens = [c + q for c, q in zip(context_lens, query_lens)]
    blocks_needed = [-(-s // block_size) for s in seq_lens]
    num_blocks = (
        shared_prefix_blocks + sum(n - shared_prefix_blocks for n in blocks_needed) + num_spare_blocks
    )
    perm = torch.randperm(num_blocks, generator=gen).tolist()
    shared, rest = perm[:shared_prefix_blocks], iter(perm[shared_prefix_blocks:])
    tables = [shared + [next(rest) for _ in range(n - shared_prefix_blocks)] for n in blocks_needed]
    block_tables = torch.zeros(len(tables), max(blocks_needed), dtype=torch.int32)
    for i, table in enumerate(tables):
        block_tables[i, : len(table)] = torch.tensor(table, dtype=torch.int32)

    slots: list[int] = []
    for table, ctx, seq in zip(tables, context_lens, seq_lens):
        slots += [table[p // block_size] * block_size + p % block_size for p in range(ctx, seq)]
    slots += [-1] * num_padding_tokens
    total = len(slots)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dtype)

    qsl = [0]
    for q in query_lens:
        qsl.append(qsl[-1] + q)
    num_decodes = next((i for i, q in enumerate(query_lens) if q != 1), len(query_lens))
    metadata = AttentionMetadata(
        slot_mapping=torch.tensor(slots, dtype=torch.int64),
        block_tables=block_tables,
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
        query_start_loc=torch.tensor(qsl, dtype=torch.int32),
        seq_lens_cpu=list(seq_lens),
        query_start_loc_cpu=qsl,
        max_query_len=max(query_lens),
        max_seq_len=max(seq_lens),
        num_decodes=num_decodes,
        block_size=block_size,
    )
    return AttentionBatch(
        query=randn(total, num_heads, head_size),
        key=randn(total, num_kv_heads, head_size),
        value=randn(total, num_kv_heads, head_size),
        kv_cache=randn(2, num_blocks, block_size, num_kv_heads, head_size),
        metadata=metadata,
        scale=head_size**-0.5,
    )


AttentionCase = Callable[[int], dict[str, Any]]
"""block_size -> keyword arguments of ``make_attention_batch`` (lengths)."""

ATTENTION_CASES: dict[str, AttentionCase] = {
    "prefill": lambda bs: {"query_lens": [5, 17, 33], "context_lens": [0, 0, 0]},
    "decode": lambda bs: {"query_lens": [1, 1, 1, 1, 1], "context_lens": [0, 7, bs, 40, 3 * bs - 1]},
    # decodes first, then a chunk that starts mid-block after 19 cached tokens, then a fresh
    # prompt; padding tokens (slot -1) at the end.
    "mixed_chunked": lambda bs: {
        "query_lens": [1, 1, 1, 13, 6],
        "context_lens": [9, 23, 3, 19, 0],
        "num_padding_tokens": 3,
    },
    # whole cached blocks, the first two shared by every request; one hit leaves a single token.
    "prefix_hit": lambda bs: {
        "query_lens": [1, 7, bs + 5],
        "context_lens": [2 * bs, 2 * bs, 3 * bs],
        "shared_prefix_blocks": 2,
    },
}


def run_attention(
    backend_cls: type[Any], ops: Any, batch: AttentionBatch
) -> torch.Tensor:
    """Run one forward of ``backend_cls`` on ``batch`` (its cache is written in place)."""
    impl = backend_cls(batch.num_heads, batch.head_size, batch.num_kv_heads, batch.scale, ops)
    return impl.forward(batch.query, batch.key, batch.value, batch.kv_cache, batch.metadata)


def assert_kv_round_trip(before: AttentionBatch, after_cache: torch.Tensor) -> None:
    """Every token with a slot reads back bit-exact from the cache; every other slot is untouched."""
    num_blocks, block_size = after_cache.shape[1:3]
    flat_after = after_cache.cpu().view(2, num_blocks * block_size, *after_cache.shape[3:])
    flat_before = before.kv_cache.view(2, num_blocks * block_size, *after_cache.shape[3:])
    slots = before.metadata.slot_mapping.cpu()
    valid = slots >= 0
    written = slots[valid]
    torch.testing.assert_close(flat_after[0, written], before.key[valid], atol=0, rtol=0,
                               msg=lambda m: f"keys read back from the cache differ:\n{m}")
    torch.testing.assert_close(flat_after[1, written], before.value[valid], atol=0, rtol=0,
                               msg=lambda m: f"values read back from the cache differ:\n{m}")
    untouched = torch.ones(num_blocks * block_size, dtype=torch.bool)
    untouched[written] = False
    torch.testing.assert_close(flat_after[:, untouched], flat_before[:, untouched], atol=0, rtol=0,
                               msg=lambda m: f"slots outside slot_mapping were modified:\n{m}")


def check_attention_against_reference(platform: Platform, batch: AttentionBatch) -> None:
    """The platform's backend and the reference on copies of ``batch``: outputs agree within
    ``TOLERANCES``, caches bit-exact (KV writes are copies)."""
    dtype = batch.query.dtype
    backend_cls = platform.select_attention_backend(batch.head_size, dtype)
    shape_args = (batch.kv_cache.shape[1], batch.kv_cache.shape[2], batch.num_kv_heads, batch.head_size)
    if tuple(backend_cls.kv_cache_shape(*shape_args)) != tuple(batch.kv_cache.shape):
        pytest.fail(
            f"backend {backend_cls.name!r} uses KV cache shape {backend_cls.kv_cache_shape(*shape_args)}; "
            f"the kit compares caches in the reference layout {tuple(batch.kv_cache.shape)}"
        )
    ref = batch.to("cpu")
    expected = run_attention(ReferenceAttentionBackend, NATIVE_OPS, ref)
    dev = batch.to(platform.device())
    actual = run_attention(backend_cls, platform.ops, dev)
    platform.synchronize()
    n = batch.metadata.num_tokens
    assert actual.shape == batch.query.shape and actual.dtype == dtype
    assert_close_to_reference(actual[:n], expected[:n], f"attention output of {backend_cls.name!r}")
    torch.testing.assert_close(
        dev.kv_cache.cpu(), ref.kv_cache, atol=0, rtol=0,
        msg=lambda m: f"KV cache written by {backend_cls.name!r} differs from the reference:\n{m}",
    )
    assert_kv_round_trip(batch, dev.kv_cache)


NUM_KV_HEADS = 2


class AttentionConformance:
    """Attention backend vs the reference over the grid; subclass as ``TestXxx``."""

    @pytest.mark.parametrize("dtype_name", list(DTYPES))
    @pytest.mark.parametrize("case", list(ATTENTION_CASES))
    @pytest.mark.parametrize("block_size", [8, 16])
    @pytest.mark.parametrize("head_size", [64, 128])
    @pytest.mark.parametrize("gqa_ratio", [1, 3, 4])
    def test_matches_reference(
        self,
        conformance_platform: Platform,
        gqa_ratio: int,
        head_size: int,
        block_size: int,
        case: str,
        dtype_name: str,
    ) -> None:
        dtype = DTYPES[dtype_name]
        skip_unless_supported(conformance_platform, dtype)
        batch = make_attention_batch(
            num_heads=NUM_KV_HEADS * gqa_ratio,
            num_kv_heads=NUM_KV_HEADS,
            head_size=head_size,
            block_size=block_size,
            dtype=dtype,
            seed=gqa_ratio * 1000 + head_size + block_size,
            **ATTENTION_CASES[case](block_size),
        )
        check_attention_against_reference(conformance_platform, batch)


# ---------------------------------------------------------------------------------------- ops
def _assert_ops_close(actual: Any, expected: Any, op: str) -> None:
    actual = actual if isinstance(actual, tuple) else (actual,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(actual) == len(expected), f"{op} returned {len(actual)} tensors, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert_close_to_reference(a, e, f"{op} output {i}")


def rotary_cos_sin_cache(head_size: int, max_positions: int, base: float = 10000.0) -> torch.Tensor:
    """[max_positions, head_size] float32: cos | sin of the default (Llama) rope frequencies."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_size, 2, dtype=torch.int64).float() / head_size)
    freqs = torch.outer(torch.arange(max_positions).float(), inv_freq)
    return torch.cat((freqs.cos(), freqs.sin()), dim=-1)


def silu_mlp_inputs(
    num_tokens: int, hidden: int, inter: int, dtype: torch.dtype, bias: bool, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Random ``Ops.silu_mlp`` arguments (x, gate_up_weight, down_weight, gate_up_bias,
    down_bias), weights scaled by 1/sqrt(fan-in) so outputs stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_tokens, hidden, generator=g).to(dtype)
    w_gu = (torch.randn(2 * inter, hidden, generator=g) / hidden**0.5).to(dtype)
    w_d = (torch.randn(hidden, inter, generator=g) / inter**0.5).to(dtype)
    b_gu = torch.randn(2 * inter, generator=g).to(dtype) if bias else None
    b_d = torch.randn(hidden, generator=g).to(dtype) if bias else None
    return x, w_gu, w_d, b_gu, b_d


class OpsConformance:
    """``platform.ops`` vs the native ``Ops``; inputs are cloned per call (ops may work in place)."""

    NUM_TOKENS = 7

    @staticmethod
    def _run(platform: Platform, op: str, *args: Any) -> tuple[Any, Any]:
        dev = platform.device()
        moved = [a.to(dev).clone() if isinstance(a, torch.Tensor) else a for a in args]
        cloned = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        actual = getattr(platform.ops, op)(*moved)
        platform.synchronize()
        return actual, getattr(NATIVE_OPS, op)(*cloned)

    @pytest.mark.parametrize("dtype_name", list(DTYPES))
    def test_embedding(self, conformance_platform: Platform, dtype_name: str) -> None:
        dtype = DTYPES[dtype_name]
        skip_unless_supported(conformance_platform, dtype)
        g = torch.Generator().manual_seed(3)
        table = torch.randn(300, 96, generator=g).to(dtype)
        ids = torch.tensor([0, 299, 17, 17, 5, 128, 3])
        actual, expected = self._run(conformance_platform, "embedding", ids, table)
        assert torch.equal(actual.cpu(), expected), "embedding: rows differ from F.embedding's"
        if conformance_platform.device().type == "cpu":  # on a GPU a bad id is a device-side assert
            with pytest.raises(IndexError):
                conformance_platform.ops.embedding(torch.tensor([1, 300]), table)

    @pytest.mark.parametrize("hidden", [64, 1000])
    @pytest.mark.parametrize("dtype_name", list(DTYPES))
    def test_rms_norm(self, conformance_platform: Platform, dtype_name: str, hidden: int) -> None:
        dtype = DTYPES[dtype_name]
        skip_unless_supported(conformance_platform, dtype)
        g = torch.Generator().manual_seed(hidden)
        x = (torch.randn(self.NUM_TOKENS, hidden, generator=g) * 3).to(dtype)
        w = (torch.randn(hidden, generator=g) * 0.5 + 1).to(dtype)
        actual, expected = self._run(conformance_platform, "rms_norm", x, w, 1e-6)
        _assert_ops_close(actual, expected, "rms_norm")

    @pytest.mark.parametrize("hidden", [64, 1000])
    @pytest.mark.parametrize("dtype_name", list(DTYPES))
    def test_fused_add_rms_norm(self, conformance_platform: Platform, dtype_name: str, hidden: int) -> None:
        dtype = DTYPES[dtype_name]
        skip_unless_supported(conformance_platform, dtype)
        g = torch.Generator().manual_seed(hidden + 1)
        x = torch.randn(self.NUM_TOKENS, hidden, generator=g).to(dtype)
        residual = (torch.randn(self.NUM_TOKENS, hidden, generator=g) * 2).to(dtype)
        w = (torch.randn(hidden, generator=g) * 0.5 + 1).to(dtype)
        actual, expected = self._run(conformance_platform, "fused_add_rms_norm", x, residual, w, 1e-5)
        _assert_ops_close(actual, expected, "fused_add_rms_norm")

    @pytest.mark.parametrize("head_size", [64, 128])
    @pytest.mark.parametrize("dtype_name", list(DTYPES))
    def test_rotary_embedding(self, conformance_platform: Platform, dtype_name: str, head_size: int) -> None:
        dtype = DTYPES[dtype_name]
        skip_unless_supported(conformance_platform, dtype)
        g = torch.Generator().manual_seed(head_size)
        num_heads, num_kv_heads, t = 6, 2, self.NUM_TOKENS
        # q and k as the model passes them: views of one fused QKV projection.
        qkv = torch.randn(t, (num_heads + 2 * num_kv_heads) * head_size, generator=g).to(dtype)
        q, k, _ = qkv.split([num_heads * head_size, num_kv_heads * head_size, num_kv_heads * head_size], -1)
        q = q.reshape(t, num_heads, head_size)
        k = k.reshape(t, num_kv_heads, head_size)
        positions = torch.randint(0, 512, (t,), generator=g)
        cache = rotary_cos_sin_cache(head_size, 512)
        actual, expected = self._run(conformance_platform, "rotary_embedding", positions, q, k, cache)
        _assert_ops_close(actual, expected, "rotary_embedding")

    @pytest.mark.parametrize("head_size", [64, 128])
    @pytest.mark.parametrize("dtype_name", list(DTYPES))
    def test_qk_norm_rotary(self, conformance_platform: Platform, dtype_name: str, head_size: int) -> None:
        dtype = DTYPES[dtype_name]
        skip_unless_supported(conformance_platform, dtype)
        g = torch.Generator().manual_seed(head_size + 2)
        num_heads, num_kv_heads, t = 6, 2, self.NUM_TOKENS
        qkv = (torch.randn(t, (num_heads + 2 * num_kv_heads) * head_size, generator=g) * 3).to(dtype)
        q, k, _ = qkv.split([num_heads * head_size, num_kv_heads * head_size, num_kv_heads * head_size], -1)
        q = q.reshape(t, num_heads, head_size)
        k = k.reshape(t, num_kv_heads, head_size)
        q_w = (torch.randn(head_size, generator=g) * 0.5 + 1).to(dtype)
        k_w = (torch.randn(head_size, generator=g) * 0.5 + 1).to(dtype)
        positions = torch.randint(0, 512, (t,), generator=g)
        cache = rotary_cos_sin_cache(head_size, 512)
        actual, expected = self._run(conformance_platform, "qk_norm_rotary", positions, q, k, q_w, k_w, 1e-6, cache)
        _assert_ops_close(actual, expected, "qk_norm_rotary")

    @pytest.mark.parametrize("d", [64, 1000])
    @pytest.mark.parametrize("dtype_name", list(DTYPES))
    def test_silu_and_mul(self, conformance_platform: Platform, dtype_name: str, d: int) -> None:
        dtype = DTYPES[dtype_name]
        skip_unless_supported(conformance_platform, dtype)
        x = torch.randn(self.NUM_TOKENS, 2 * d, generator=torch.Generator().manual_seed(d)).to(dtype)
        actual, expected = self._run(conformance_platform, "silu_and_mul", x)
        _assert_ops_close(actual, expected, "silu_and_mul")

    @pytest.mark.parametrize("bias", [False, True])
    @pytest.mark.parametrize("num_tokens", [1, 7, 300])
    @pytest.mark.parametrize("dtype_name", list(DTYPES))
    def test_silu_mlp(self, conformance_platform: Platform, dtype_name: str, num_tokens: int, bias: bool) -> None:
        dtype = DTYPES[dtype_name]
        skip_unless_supported(conformance_platform, dtype)
        args = silu_mlp_inputs(num_tokens, 64, 200, dtype, bias, seed=num_tokens)
        actual, expected = self._run(conformance_platform, "silu_mlp", *args)
        _assert_ops_close(actual, expected, "silu_mlp")

    @pytest.mark.parametrize("block_size", [8, 16])
    @pytest.mark.parametrize("dtype_name", list(DTYPES))
    def test_reshape_and_cache(self, conformance_platform: Platform, dtype_name: str, block_size: int) -> None:
        dtype = DTYPES[dtype_name]
        skip_unless_supported(conformance_platform, dtype)
        g = torch.Generator().manual_seed(block_size)
        num_blocks, num_kv_heads, head_size, t = 5, 2, 64, 11
        key = torch.randn(t, num_kv_heads, head_size, generator=g).to(dtype)
        value = torch.randn(t, num_kv_heads, head_size, generator=g).to(dtype)
        caches = torch.randn(2, num_blocks, block_size, num_kv_heads, head_size, generator=g).to(dtype)
        slots = torch.randperm(num_blocks * block_size, generator=g)[:t]
        slots[[2, 7]] = -1  # skipped rows
        dev = conformance_platform.device()
        dev_caches = caches.to(dev).clone()
        conformance_platform.ops.reshape_and_cache(
            key.to(dev), value.to(dev), dev_caches[0], dev_caches[1], slots.to(dev)
        )
        conformance_platform.synchronize()
        ref_caches = caches.clone()
        NATIVE_OPS.reshape_and_cache(key, value, ref_caches[0], ref_caches[1], slots)
        torch.testing.assert_close(dev_caches.cpu(), ref_caches, atol=0, rtol=0)

    @pytest.mark.parametrize("slice_sizes", [(64, 32, 32), (48, 48), (40,)], ids=["qkv", "gate_up", "o"])
    @pytest.mark.parametrize("num_tokens", [1, 7, 37])
    @pytest.mark.parametrize("dtype_name", list(DTYPES))
    def test_add_lora(
        self, conformance_platform: Platform, dtype_name: str, num_tokens: int, slice_sizes: tuple[int, ...]
    ) -> None:
        """Rows of three slots (effective ranks 4, 16, 8 in slots of rank 16), base rows (-1)."""
        dtype = DTYPES[dtype_name]
        skip_unless_supported(conformance_platform, dtype)
        g = torch.Generator().manual_seed(num_tokens + len(slice_sizes))
        k, slots, rank, n = 56, 3, 16, sum(slice_sizes)
        a = torch.zeros(len(slice_sizes), slots, rank, k)
        b = torch.zeros(slots, rank, n)
        for slot, r in enumerate((4, rank, 8)):
            a[:, slot, :r] = torch.randn(len(slice_sizes), r, k, generator=g) / k**0.5
            b[slot, :r] = torch.randn(r, n, generator=g) / r**0.5
        x = torch.randn(num_tokens, k, generator=g).to(dtype)
        out = torch.randn(num_tokens, n, generator=g).to(dtype)
        token_slots = torch.randint(-1, slots, (num_tokens,), generator=g)
        token_slots[0] = 1  # at least one adapter row
        scaling = torch.tensor([0.5, 2.0, 1.25])
        dev = conformance_platform.device()
        actual = out.to(dev).clone()
        conformance_platform.ops.add_lora(actual, x.to(dev), a.to(dtype).to(dev), b.to(dtype).to(dev), slice_sizes,
                                          token_slots.to(dev), scaling.to(dev))
        conformance_platform.synchronize()
        expected = out.clone()
        NATIVE_OPS.add_lora(expected, x, a.to(dtype), b.to(dtype), slice_sizes, token_slots, scaling)
        _assert_ops_close(actual, expected, "add_lora")
        base_rows = token_slots < 0
        assert torch.equal(actual.cpu()[base_rows], out[base_rows]), "add_lora changed a base row (slot -1)"


# ---------------------------------------------------------------------------------- end to end
def make_tiny_llama(
    path: str | Path,
    *,
    seed: int = 0,
    vocab_size: int = 256,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 256,
    max_position_embeddings: int = 512,
) -> str:
    """Save a random-weight ``LlamaForCausalLM`` (safetensors, no tokenizer) to ``path``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        initializer_range=0.1,  # peaked logits: no near-ties for float32 rounding to flip
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
    model.save_pretrained(str(path))
    return str(path)


def default_prompts(vocab_size: int = 256, seed: int = 0) -> list[list[int]]:
    """Prompts sharing a 20-token prefix (prefix-cache hits on the second pass), of lengths that
    exercise single-token, short and chunked prefills."""
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(3, vocab_size, (20,), generator=g).tolist()
    return [prefix + torch.randint(3, vocab_size, (n,), generator=g).tolist() for n in (1, 7, 30, 45)] + [
        torch.randint(3, vocab_size, (9,), generator=g).tolist()
    ]


def greedy_token_ids(
    model_dir: str,
    device: str,
    prompts: Sequence[Sequence[int]],
    *,
    max_tokens: int = 8,
    **llm_kwargs: Any,
) -> list[list[int]]:
    """Greedy tokens of every prompt through ``LLM`` on ``device``, generated twice in a row (the
    second pass hits the prefix cache); small token budget and blocks force chunked prefills and
    mixed batches."""
    from vllm_core import LLM, SamplingParams

    kwargs: dict[str, Any] = {
        "dtype": "float32",
        "skip_tokenizer_init": True,
        "num_gpu_blocks_override": 64,
        "max_model_len": 128,
        "block_size": 8,
        "max_num_batched_tokens": 32,
        **llm_kwargs,
    }
    llm = LLM(model=model_dir, device=device, use_tqdm_on_load=False, **kwargs)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, detokenize=False)
    requests = [{"prompt_token_ids": list(p)} for p in prompts]
    tokens = []
    for _ in range(2):
        for out in llm.generate(requests, params, use_tqdm=False):
            tokens.append(list(out.outputs[0].token_ids))
    return tokens


def assert_greedy_matches_reference(
    model_dir: str, device: str, prompts: Sequence[Sequence[int]] | None = None, **llm_kwargs: Any
) -> None:
    """Greedy tokens on ``device`` equal those of the reference platform, prompt by prompt."""
    prompts = default_prompts() if prompts is None else prompts
    expected = greedy_token_ids(model_dir, "reference", prompts, **llm_kwargs)
    actual = greedy_token_ids(model_dir, device, prompts, **llm_kwargs)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a == e, f"prompt {i % len(prompts)} (pass {i // len(prompts) + 1}): {device} {a} != reference {e}"


class EndToEndConformance:
    """Greedy decoding of a tiny random Llama: the platform's tokens equal the reference's."""

    @pytest.fixture(scope="class")
    def tiny_llama_dir(self, tmp_path_factory: pytest.TempPathFactory) -> str:
        return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))

    def test_greedy_matches_reference(self, conformance_platform: Platform, tiny_llama_dir: str) -> None:
        assert_greedy_matches_reference(tiny_llama_dir, conformance_platform.name)


__all__ = [
    "ATTENTION_CASES",
    "AttentionBatch",
    "AttentionConformance",
    "EndToEndConformance",
    "OpsConformance",
    "TOLERANCES",
    "assert_close_to_reference",
    "assert_greedy_matches_reference",
    "assert_kv_round_trip",
    "check_attention_against_reference",
    "default_prompts",
    "greedy_token_ids",
    "make_attention_batch",
    "make_tiny_llama",
    "rotary_cos_sin_cache",
    "run_attention",
]
