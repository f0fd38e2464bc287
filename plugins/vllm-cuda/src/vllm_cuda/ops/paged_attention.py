"""Paged attention over a ragged batch (prefill chunks and decodes together), in Triton.

Two paths, same KV layout as the reference backend (``[num_blocks, block_size, Hk, D]`` for keys
and for values):

**Unified kernel** (every batch). Grid ``(num_reqs, cdiv(max_query_len, BLOCK_Q), num_kv_heads)``:
one program takes a tile of ``BLOCK_Q`` query tokens of one request and all ``GROUP`` query heads
that share one KV head, so each KV tile is loaded once for the whole group. Its ``BLOCK_M`` rows
are (query token, head-in-group) pairs::

    row m -> token tile_start + m // GROUP, query head kv_head * GROUP + m % GROUP

It walks the request's KV in ``BLOCK_N``-token tiles, looking up each token's block in
``block_tables``, stops at the tile's causal horizon, and keeps an online softmax in float32
(QK and PV through ``tl.dot``). Query token ``j`` of request ``i`` sits at position
``seq_len - query_len + j``. Programs past their request's ``query_len`` exit at once, so the
grid depends only on ``num_reqs`` and ``max_query_len``: a decode-only batch launches the same
shapes every step (what CUDA-graph capture needs).

**Split-KV decode** (flash-decoding; a few long decodes). Single-token rows give the unified grid
only ``num_decodes * num_kv_heads`` programs, too few to fill the GPU when contexts are long. The
KV range is cut into partitions, one program per (request, KV head,
partition) writes its partial (max, sum, unnormalised accumulator) in float32, and a second
kernel merges the partitions of each (request, query head). Prefill rows of the same batch go
through the unified kernel.

Tile sizes, warps, pipelining and the split-KV heuristic's thresholds come from the device's
``LaunchConfigs.attention`` (``vllm_cuda.launch``), not from this file.
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from vllm_core.plugins.api import AttentionMetadata
from vllm_cuda.launch import AttentionLaunch, LaunchConfigs
from vllm_cuda.launch_nvidia import DEFAULT_LAUNCH_CONFIGS

LOG2E = 1.4426950408889634
DEFAULT_ATTENTION = DEFAULT_LAUNCH_CONFIGS.attention


def use_split_kv(metadata: AttentionMetadata, num_kv_heads: int, tuning: AttentionLaunch = DEFAULT_ATTENTION) -> bool:
    """Whether the decode rows of this batch take the split-KV path (the default heuristic)."""
    return (
        metadata.num_decodes > 0
        and metadata.max_seq_len >= tuning.split_kv_min_seq_len
        and metadata.num_decodes * num_kv_heads <= tuning.split_kv_max_programs
    )


def split_partition_size(
    max_seq_len: int, num_programs: int, block_n: int, tuning: AttentionLaunch = DEFAULT_ATTENTION
) -> int:
    """KV tokens per partition: enough partitions for ~``split_kv_target_programs`` programs in
    all, each a whole number of KV tiles and at most ``partition_size`` tokens."""
    parts = max(1, -(-tuning.split_kv_target_programs // max(num_programs, 1)))
    size = -(-max_seq_len // parts)
    size = -(-size // block_n) * block_n
    return max(block_n, min(size, tuning.partition_size))


@triton.jit
def _attend_tile(
    q, m_i, l_i, acc, k_cache_ptr, v_cache_ptr, table_ptr, kv_head, stride_cb, stride_cs, stride_ch,
    scale, kv_start, kv_end, q_pos,
    HEAD_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr, CAUSAL: tl.constexpr,
    DOT_PRECISION: tl.constexpr, MASKED: tl.constexpr,
):
    """Online softmax of ``q`` [BLOCK_M, D] over KV positions [kv_start, kv_end) of one request.

    ``table_ptr`` points at the request's block table; scores are in log2 units (``scale``
    carries log2(e)). With ``CAUSAL``, row r only sees positions <= q_pos[r]. Without
    ``MASKED`` the caller promises whole tiles that every row sees: no masks are built at all
    (most tiles of a long prefill or decode; the masked pass does the rest).
    Returns the updated (m_i, l_i, acc).
    """
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_SIZE)
    for start_n in range(kv_start, kv_end, BLOCK_N):
        k_pos = start_n + offs_n
        if MASKED:
            k_valid = k_pos < kv_end
            block = tl.load(table_ptr + k_pos // BLOCK_SIZE, mask=k_valid, other=0).to(tl.int64)
        else:
            block = tl.load(table_ptr + k_pos // BLOCK_SIZE).to(tl.int64)
        kv_off = block * stride_cb + (k_pos % BLOCK_SIZE) * stride_cs + kv_head * stride_ch
        if MASKED:
            k = tl.load(k_cache_ptr + kv_off[:, None] + offs_d[None, :], mask=k_valid[:, None], other=0.0)
            v = tl.load(v_cache_ptr + kv_off[:, None] + offs_d[None, :], mask=k_valid[:, None], other=0.0)
        else:
            k = tl.load(k_cache_ptr + kv_off[:, None] + offs_d[None, :])
            v = tl.load(v_cache_ptr + kv_off[:, None] + offs_d[None, :])
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * scale
        if MASKED:
            visible = k_valid[None, :]
            if CAUSAL:
                visible = visible & (k_pos[None, :] <= q_pos[:, None])
            qk = tl.where(visible, qk, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            # A row with nothing visible yet keeps m = -inf; subtracting 0 keeps exp2 at 0, not NaN.
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        else:
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            m_safe = m_new
        alpha = tl.math.exp2(m_i - m_safe)
        p = tl.math.exp2(qk - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
        m_i = m_new
    return m_i, l_i, acc


# Arguments that change from step to step are not specialised (Triton would otherwise compile a
# new variant the first time one is, say, not a multiple of 16: a 100-200 ms stall mid-run).
@triton.jit(do_not_specialize=["req_offset", "stride_bt"])
def _unified_attention_kernel(
    out_ptr, q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, seq_lens_ptr, query_start_loc_ptr,
    scale, req_offset,
    stride_qt, stride_qh, stride_ot, stride_oh, stride_cb, stride_cs, stride_ch, stride_bt,
    GROUP: tl.constexpr, HEAD_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_Q: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_SIZE: tl.constexpr, DOT_PRECISION: tl.constexpr, MASK_FREE_PASS: tl.constexpr,
):
    req = tl.program_id(0) + req_offset
    tile_start = tl.program_id(1) * BLOCK_Q
    kv_head = tl.program_id(2)
    q_begin = tl.load(query_start_loc_ptr + req)
    q_len = tl.load(query_start_loc_ptr + req + 1) - q_begin
    if tile_start >= q_len:
        return
    context_len = tl.load(seq_lens_ptr + req) - q_len

    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_SIZE)
    tok = tile_start + offs_m // GROUP
    head = kv_head * GROUP + offs_m % GROUP
    row_valid = (offs_m < BLOCK_Q * GROUP) & (tok < q_len)
    token = (q_begin + tok).to(tl.int64)
    q = tl.load(q_ptr + token[:, None] * stride_qt + head[:, None] * stride_qh + offs_d[None, :],
                mask=row_valid[:, None], other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_SIZE], tl.float32)
    # The tile's last token sees every position up to its own: nothing past that is loaded.
    kv_end = context_len + tl.minimum(tile_start + BLOCK_Q, q_len)
    table = block_tables_ptr + req.to(tl.int64) * stride_bt
    full_end = 0
    if MASK_FREE_PASS:
        # Every row sees the whole tiles before the tile's first token: those go without masks.
        full_end = (context_len + tile_start) // BLOCK_N * BLOCK_N
        m_i, l_i, acc = _attend_tile(
            q, m_i, l_i, acc, k_cache_ptr, v_cache_ptr, table, kv_head,
            stride_cb, stride_cs, stride_ch, scale, 0, full_end, context_len + tok,
            HEAD_SIZE, BLOCK_N, BLOCK_SIZE, False, DOT_PRECISION, False,
        )
    m_i, l_i, acc = _attend_tile(
        q, m_i, l_i, acc, k_cache_ptr, v_cache_ptr, table, kv_head,
        stride_cb, stride_cs, stride_ch, scale, full_end, kv_end, context_len + tok,
        HEAD_SIZE, BLOCK_N, BLOCK_SIZE, True, DOT_PRECISION, True,
    )
    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    tl.store(out_ptr + token[:, None] * stride_ot + head[:, None] * stride_oh + offs_d[None, :],
             out.to(out_ptr.dtype.element_ty), mask=row_valid[:, None])


_VARYING_SPLIT_ARGS = ["stride_bt", "stride_pr", "stride_ph", "stride_ar", "stride_ah", "partition_size"]


@triton.jit(do_not_specialize=_VARYING_SPLIT_ARGS)
def _split_kv_decode_kernel(
    part_m_ptr, part_l_ptr, part_acc_ptr, q_ptr, k_cache_ptr, v_cache_ptr, block_tables_ptr, seq_lens_ptr,
    query_start_loc_ptr, scale,
    stride_qt, stride_qh, stride_cb, stride_cs, stride_ch, stride_bt, stride_pr, stride_ph, stride_ar, stride_ah,
    stride_ap, partition_size,
    GROUP: tl.constexpr, HEAD_SIZE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """One (decode request, KV head, partition): the partial softmax of its GROUP query heads."""
    req = tl.program_id(0)
    kv_head = tl.program_id(1)
    part = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + req)
    part_start = part * partition_size
    if part_start >= seq_len:
        return
    part_end = tl.minimum(part_start + partition_size, seq_len)

    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_SIZE)
    head = kv_head * GROUP + offs_m
    row_valid = offs_m < GROUP
    token = tl.load(query_start_loc_ptr + req).to(tl.int64)
    q = tl.load(q_ptr + token * stride_qt + head[:, None] * stride_qh + offs_d[None, :],
                mask=row_valid[:, None], other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_SIZE], tl.float32)
    # The decode token is the last of its sequence: it sees the whole partition, no causal mask;
    # only a partial last tile needs one.
    full_end = part_start + (part_end - part_start) // BLOCK_N * BLOCK_N
    table = block_tables_ptr + req.to(tl.int64) * stride_bt
    m_i, l_i, acc = _attend_tile(
        q, m_i, l_i, acc, k_cache_ptr, v_cache_ptr, table, kv_head,
        stride_cb, stride_cs, stride_ch, scale, part_start, full_end, offs_m,
        HEAD_SIZE, BLOCK_N, BLOCK_SIZE, False, DOT_PRECISION, False,
    )
    m_i, l_i, acc = _attend_tile(
        q, m_i, l_i, acc, k_cache_ptr, v_cache_ptr, table, kv_head,
        stride_cb, stride_cs, stride_ch, scale, full_end, part_end, offs_m,
        HEAD_SIZE, BLOCK_N, BLOCK_SIZE, False, DOT_PRECISION, True,
    )
    part_off = req.to(tl.int64) * stride_pr + head * stride_ph + part
    tl.store(part_m_ptr + part_off, m_i, mask=row_valid)
    tl.store(part_l_ptr + part_off, l_i, mask=row_valid)
    acc_off = req.to(tl.int64) * stride_ar + head[:, None] * stride_ah + part * stride_ap + offs_d[None, :]
    tl.store(part_acc_ptr + acc_off, acc, mask=row_valid[:, None])


@triton.jit(do_not_specialize=_VARYING_SPLIT_ARGS)
def _split_kv_reduce_kernel(
    out_ptr, part_m_ptr, part_l_ptr, part_acc_ptr, seq_lens_ptr, query_start_loc_ptr,
    stride_ot, stride_oh, stride_pr, stride_ph, stride_ar, stride_ah, stride_ap, partition_size,
    HEAD_SIZE: tl.constexpr, BLOCK_P: tl.constexpr,
):
    """One (decode request, query head): merge its partitions' partial softmaxes."""
    req = tl.program_id(0)
    head = tl.program_id(1)
    num_parts = tl.cdiv(tl.load(seq_lens_ptr + req), partition_size)
    offs_p = tl.arange(0, BLOCK_P)
    offs_d = tl.arange(0, HEAD_SIZE)
    p_valid = offs_p < num_parts
    part_off = req.to(tl.int64) * stride_pr + head * stride_ph + offs_p
    part_max = tl.load(part_m_ptr + part_off, mask=p_valid, other=float("-inf"))
    part_sum = tl.load(part_l_ptr + part_off, mask=p_valid, other=0.0)
    # Every partition below num_parts holds at least one key, so its max is finite.
    w = tl.where(p_valid, tl.math.exp2(part_max - tl.max(part_max, 0)), 0.0)
    acc_off = req.to(tl.int64) * stride_ar + head * stride_ah + offs_p[:, None] * stride_ap + offs_d[None, :]
    acc = tl.load(part_acc_ptr + acc_off, mask=p_valid[:, None], other=0.0)
    denom = tl.sum(w * part_sum, 0)
    out = tl.sum(acc * w[:, None], 0) / tl.where(denom == 0.0, 1.0, denom)
    token = tl.load(query_start_loc_ptr + req).to(tl.int64)
    tl.store(out_ptr + token * stride_ot + head * stride_oh + offs_d, out.to(out_ptr.dtype.element_ty))


def _dot_precision(dtype: torch.dtype, tuning: AttentionLaunch) -> str:
    """float32 inputs use exact float32 products (the reference's); 16-bit inputs take the
    table's setting, which does not change their products."""
    return "ieee" if dtype == torch.float32 else tuning.dot_precision_16bit


def _block_n(head_size: int, tuning: AttentionLaunch) -> int:
    return tuning.block_n if head_size <= 128 else tuning.block_n_large_head


def paged_attention(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    metadata: AttentionMetadata,
    scale: float,
    *,
    out: torch.Tensor | None = None,
    split_kv: bool | None = None,
    partition_size: int | None = None,
    configs: LaunchConfigs = DEFAULT_LAUNCH_CONFIGS,
) -> torch.Tensor:
    """Causal paged attention for a ragged batch whose new KV is already in the cache.

    query: [T, Hq, D]; key_cache/value_cache: [num_blocks, block_size, Hk, D]; returns
    ``out`` (or a new tensor) [T, Hq, D]; rows past ``metadata.num_tokens`` are left unwritten.
    ``split_kv`` forces the split-KV decode path on (True) or off (False); None lets
    ``use_split_kv`` decide. ``partition_size`` must be a multiple of the KV tile
    (``configs.attention.block_n``, or ``block_n_large_head`` for head sizes above 128); None
    sizes partitions so the split grid has about ``split_kv_target_programs`` programs (at most
    ``configs.attention.partition_size`` tokens each). ``configs``: the device's launch table entry.
    """
    num_heads, head_size = query.shape[1:]
    block_size, num_kv_heads = key_cache.shape[1:3]
    group = num_heads // num_kv_heads
    if out is None:
        out = torch.empty_like(query)
    num_reqs = metadata.num_reqs
    if num_reqs == 0 or query.shape[0] == 0:
        return out
    if query.stride(-1) != 1:
        query = query.contiguous()
    if key_cache.stride() != value_cache.stride() or key_cache.stride(-1) != 1:
        raise ValueError(f"key/value caches of strides {key_cache.stride()} / {value_cache.stride()} "
                         "must share one layout with a contiguous head dimension")
    tuning = configs.attention
    block_n = _block_n(head_size, tuning)
    if partition_size is None:
        partition_size = split_partition_size(
            metadata.max_seq_len, metadata.num_decodes * num_kv_heads, block_n, tuning
        )
    if partition_size % block_n:
        raise ValueError(f"partition_size {partition_size} is not a multiple of the KV tile {block_n}")
    if split_kv is None:
        split_kv = use_split_kv(metadata, num_kv_heads, tuning)
    num_split = metadata.num_decodes if split_kv else 0
    common = dict(
        q_ptr=query, k_cache_ptr=key_cache, v_cache_ptr=value_cache, block_tables_ptr=metadata.block_tables,
        seq_lens_ptr=metadata.seq_lens, query_start_loc_ptr=metadata.query_start_loc, scale=scale * LOG2E,
        stride_qt=query.stride(0), stride_qh=query.stride(1), stride_cb=key_cache.stride(0),
        stride_cs=key_cache.stride(1), stride_ch=key_cache.stride(2), stride_bt=metadata.block_tables.stride(0),
        GROUP=group, HEAD_SIZE=head_size, BLOCK_N=block_n, BLOCK_SIZE=block_size,
        DOT_PRECISION=_dot_precision(query.dtype, tuning),
    )
    if num_split:
        _split_kv_decode(out, metadata, num_split, num_heads, partition_size, common, tuning)
    if num_split < num_reqs:
        # Decode-only batches use the smallest tile that holds one token's head group.
        block_m = max(16, triton.next_power_of_2(group))
        # Decode-only batches run one masked pass: on an H200 the extra mask-free pass slows the
        # memory-bound decode by 10-25 %, while prefill tiles gain from it.
        launch: dict[str, Any] = {**tuning.decode.options, "MASK_FREE_PASS": False}
        if metadata.max_query_len > 1:
            block_m = max(block_m, tuning.prefill_block_m)
            launch = {**tuning.prefill.options, "MASK_FREE_PASS": True}
            if head_size <= 128:
                common = {**common, "BLOCK_N": tuning.prefill_block_n}
        block_q = block_m // group
        grid = (num_reqs - num_split, triton.cdiv(metadata.max_query_len, block_q), num_kv_heads)
        _unified_attention_kernel[grid](
            out_ptr=out, req_offset=num_split, stride_ot=out.stride(0), stride_oh=out.stride(1),
            BLOCK_M=block_m, BLOCK_Q=block_q, **launch, **common,
        )
    return out


def _split_kv_decode(
    out: torch.Tensor, metadata: AttentionMetadata, num_decodes: int, num_heads: int, partition_size: int,
    common: dict, tuning: AttentionLaunch,
) -> None:
    """Attention of the leading ``num_decodes`` (one-token) rows through the two split-KV kernels."""
    num_parts = triton.cdiv(metadata.max_seq_len, partition_size)
    head_size, num_kv_heads = common["HEAD_SIZE"], num_heads // common["GROUP"]
    device = out.device
    part_m = torch.empty(num_decodes, num_heads, num_parts, dtype=torch.float32, device=device)
    part_l = torch.empty_like(part_m)
    part_acc = torch.empty(num_decodes, num_heads, num_parts, head_size, dtype=torch.float32, device=device)
    part_strides = dict(stride_pr=part_m.stride(0), stride_ph=part_m.stride(1), stride_ar=part_acc.stride(0),
                        stride_ah=part_acc.stride(1), stride_ap=part_acc.stride(2))
    _split_kv_decode_kernel[(num_decodes, num_kv_heads, num_parts)](
        part_m_ptr=part_m, part_l_ptr=part_l, part_acc_ptr=part_acc,
        BLOCK_M=max(16, triton.next_power_of_2(common["GROUP"])), partition_size=partition_size,
        **tuning.split_decode.options, **part_strides, **common,
    )
    _split_kv_reduce_kernel[(num_decodes, num_heads)](
        out, part_m, part_l, part_acc, metadata.seq_lens, metadata.query_start_loc,
        out.stride(0), out.stride(1), **part_strides, partition_size=partition_size,
        HEAD_SIZE=head_size, BLOCK_P=max(16, triton.next_power_of_2(num_parts)),
        **tuning.split_reduce.options,
    )
