"""``CPUAttentionBackend``: paged attention on the CPU; decodes in a C kernel, prefills through SDPA.

Same KV layout as the reference backend (``kv_cache[0]`` keys, ``kv_cache[1]`` values, each
``[num_blocks, block_size, num_kv_heads, head_size]``). Scores, softmax and the weighted sum of
values run in float32 whatever the cache dtype, as in the reference; the result is cast back.

- Decode rows (the leading ``metadata.num_decodes``, one token each) run in one call of the C
  kernel: every (sequence, KV head) pair reads its keys and values in place, block by block, from
  the paged cache (nothing gathered), its query heads sharing each key load. Without the kernels
  they are gathered into ``[num_decodes, max_len, Hk, D]`` for one masked SDPA call.
- Prefill rows (whole prompts or chunks, possibly after prefix-cached context) run through
  ``scaled_dot_product_attention``, one request per chunk of the kernels' pool (requests in
  parallel): plain causal on the step's own keys when the chunk starts at position 0, else over
  the cached history with a causal mask shifted by the context length.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from vllm_core.plugins.api import AttentionBackend, AttentionMetadata
from vllm_cpu.kernels import Kernels

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
KERNEL_DTYPES = (torch.float32, torch.bfloat16)


def gather_decode_kv(
    cache: torch.Tensor, block_tables: torch.Tensor, max_len: int
) -> torch.Tensor:
    """[num_blocks, block_size, Hk, D] + block_tables [B, n] -> [B, max_len, Hk, D] (float32).

    Tokens past a row's own length come from padding blocks and must be masked by the caller.
    """
    block_size = cache.shape[1]
    n_blocks = -(-max_len // block_size)
    blocks = block_tables[:, :n_blocks].long()
    return cache[blocks].flatten(1, 2)[:, :max_len].float()


def decode_attention(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    max_len: int,
    scale: float,
) -> torch.Tensor:
    """One new token per row. query: [B, Hq, D]; seq_lens: [B] -> [B, Hq, D] float32."""
    k = gather_decode_kv(key_cache, block_tables, max_len).transpose(1, 2)  # [B, Hk, S, D]
    v = gather_decode_kv(value_cache, block_tables, max_len).transpose(1, 2)
    q = query.float().unsqueeze(2)  # [B, Hq, 1, D]
    # SDPA reads the strided K/V in place (matmul would copy them) and groups the query heads
    # of one KV head itself; the mask hides each row's padding past its own length.
    valid = torch.arange(max_len, device=query.device).unsqueeze(0) < seq_lens.unsqueeze(1)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=valid[:, None, None, :], scale=scale, enable_gqa=q.shape[1] != k.shape[1]
    )
    return out.squeeze(2)


def prefill_attention(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_ids: torch.Tensor,
    seq_len: int,
    scale: float,
    key: torch.Tensor | None = None,
    value: torch.Tensor | None = None,
) -> torch.Tensor:
    """One request's chunk: its last ``q_len`` positions attend causally to ``seq_len`` cached
    tokens. query: [q_len, Hq, D]; block_ids: [>= ceil(seq_len / block_size)] -> [q_len, Hq, D]
    float32. ``key``/``value`` ([q_len, Hk, D], this step's own) are used instead of reading the
    cache back when the chunk is the whole history (no context)."""
    q_len = query.shape[0]
    context = seq_len - q_len
    if context == 0 and key is not None and value is not None:
        k, v = key, value
    else:
        block_size = key_cache.shape[1]
        blocks = block_ids[: -(-seq_len // block_size)].long()
        k = key_cache.index_select(0, blocks).flatten(0, 1)[:seq_len]
        v = value_cache.index_select(0, blocks).flatten(0, 1)[:seq_len]
    q = query.float().transpose(0, 1).unsqueeze(0)  # [1, Hq, L, D]
    k = k.float().transpose(0, 1).unsqueeze(0)  # [1, Hk, S, D]
    v = v.float().transpose(0, 1).unsqueeze(0)
    gqa = q.shape[1] != k.shape[1]
    if context == 0:
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    else:
        # Query i sits at position context + i and sees keys 0 ..= context + i.
        k_pos = torch.arange(seq_len, device=query.device).unsqueeze(0)
        q_pos = torch.arange(context, seq_len, device=query.device).unsqueeze(1)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=k_pos <= q_pos, scale=scale, enable_gqa=gqa
        )
    return out.squeeze(0).transpose(0, 1)


def paged_decode_attention(
    lib: Any,
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    metadata: AttentionMetadata,
    num_decodes: int,
    scale: float,
    out: torch.Tensor,
) -> None:
    """Decode rows through the C kernel: each row's keys and values are read in place from its
    blocks (no gathered copy of the history). query: [>= num_decodes, Hq, D], rows strided, heads
    contiguous; writes out[:num_decodes]. ``lib``: the ops' kernel library (``CPUOps.lib``)."""
    if query.stride(2) != 1 or query.stride(1) != query.shape[2]:
        query = query.contiguous()
    tables = metadata.block_tables
    seq_lens = metadata.seq_lens
    if tables.dtype != torch.int32 or not tables.is_contiguous():
        tables = tables.to(torch.int32).contiguous()
    if seq_lens.dtype != torch.int32 or not seq_lens.is_contiguous():
        seq_lens = seq_lens.to(torch.int32).contiguous()
    hq, d = query.shape[1], query.shape[2]
    lib.vc_decode_attention(
        query.data_ptr(), query.stride(0), key_cache.data_ptr(), value_cache.data_ptr(), tables.data_ptr(),
        tables.shape[1], seq_lens.data_ptr(), out.data_ptr(), out.stride(0), num_decodes, hq, key_cache.shape[2],
        d, key_cache.shape[1], scale, query.dtype == torch.bfloat16,
    )


MAX_EXPANDED_QUERY = 16
"""Rows with at most this many query tokens (speculative verification: 1 + k; short prefill
chunks) run on the decode kernel, one pseudo-row per token."""


def expanded_decode_attention(
    lib: Any,
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    metadata: AttentionMetadata,
    rows: list[int],
    scale: float,
    out: torch.Tensor,
) -> None:
    """Short multi-token rows through the decode kernel: token ``t`` of a row whose query starts
    at position ``c`` is a decode row of ``c + t + 1`` keys (causal), reading the row's blocks in
    place; every token's KV is in the cache already (written before attention)."""
    qsl, seq_lens_cpu = metadata.query_start_loc_cpu, metadata.seq_lens_cpu
    tokens: list[int] = []
    lens: list[int] = []
    owner: list[int] = []
    for i in rows:
        start, end = qsl[i], qsl[i + 1]
        context = seq_lens_cpu[i] - (end - start)
        tokens.extend(range(start, end))
        lens.extend(range(context + 1, context + 1 + end - start))
        owner.extend([i] * (end - start))
    index = torch.tensor(tokens, dtype=torch.int64)
    pseudo = SimpleNamespace(
        block_tables=metadata.block_tables.index_select(0, torch.tensor(owner, dtype=torch.int64)),
        seq_lens=torch.tensor(lens, dtype=torch.int32),
    )
    q = query.index_select(0, index)
    result = torch.empty(q.shape, dtype=query.dtype)
    paged_decode_attention(lib, q, key_cache, value_cache, pseudo, len(tokens), scale, result)  # type: ignore[arg-type]
    out.index_copy_(0, index, result)


class CPUAttentionBackend(AttentionBackend):
    """Vectorised paged attention for the CPU platform; agrees with the reference to float32
    rounding."""

    name: ClassVar[str] = "cpu"
    priority: ClassVar[int] = 10
    requires: ClassVar[frozenset[str]] = frozenset({"cpu"})

    @classmethod
    def supports(cls, head_size: int, dtype: torch.dtype) -> str | None:
        if dtype not in SUPPORTED_DTYPES:
            return f"dtype {dtype} is not one of {', '.join(map(str, SUPPORTED_DTYPES))}"
        if head_size <= 0:
            return f"head_size {head_size} is not positive"
        return None

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        kv_cache: torch.Tensor,
        metadata: AttentionMetadata,
    ) -> torch.Tensor:
        key_cache, value_cache = kv_cache[0], kv_cache[1]
        self.ops.reshape_and_cache(key, value, key_cache, value_cache, metadata.slot_mapping)
        # Rows past metadata.num_tokens (padding) are left unwritten, as in the reference.
        out = torch.empty(query.shape, dtype=query.dtype)
        nd = metadata.num_decodes
        kernels: Kernels | None = getattr(self.ops, "kernels", None)
        lib = getattr(self.ops, "lib", None)  # CPUOps' library, or the recorder of a plan capture
        if nd and lib is not None and query.dtype in KERNEL_DTYPES and key_cache.dtype == query.dtype:
            paged_decode_attention(lib, query, key_cache, value_cache, metadata, nd, self.scale, out)
        elif nd:
            max_len = max(metadata.seq_lens_cpu[:nd])
            out[:nd] = decode_attention(
                query[:nd],
                key_cache,
                value_cache,
                metadata.block_tables[:nd],
                metadata.seq_lens[:nd],
                max_len,
                self.scale,
            ).to(query.dtype)
        qsl = metadata.query_start_loc_cpu
        prefills = [i for i in range(nd, metadata.num_reqs) if qsl[i + 1] > qsl[i]]
        if prefills and lib is not None and query.dtype in KERNEL_DTYPES and key_cache.dtype == query.dtype:
            short = [i for i in prefills if qsl[i + 1] - qsl[i] <= MAX_EXPANDED_QUERY]
            if short:
                expanded_decode_attention(lib, query, key_cache, value_cache, metadata, short, self.scale, out)
                prefills = [i for i in prefills if qsl[i + 1] - qsl[i] > MAX_EXPANDED_QUERY]

        def prefill(j: int) -> None:
            i = prefills[j]
            start, end = qsl[i], qsl[i + 1]
            out[start:end] = prefill_attention(
                query[start:end],
                key_cache,
                value_cache,
                metadata.block_tables[i],
                metadata.seq_lens_cpu[i],
                self.scale,
                key[start:end],
                value[start:end],
            ).to(query.dtype)

        if kernels is not None and len(prefills) > 1:
            kernels.parallel(prefill, len(prefills))
        else:
            for j in range(len(prefills)):
                prefill(j)
        return out
