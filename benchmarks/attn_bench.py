"""Prefill and decode attention: the Triton paged kernel (launch variants) against PyTorch SDPA.

Prefill: equal-length causal sequences in a paged cache with shuffled blocks (Qwen3-0.6B heads:
16 query / 8 KV heads of 128), the shape of one 8192-token prefill step; SDPA (flash) runs the
same sequences contiguous. TFLOP/s count the causal half: 4 * Hq * D * L * (L + 1) / 2 per
sequence. Decode: 256 single-token rows at ~1100 tokens of context (the steady decode step),
reported as KV bytes read per second. Each variant's output is checked against SDPA first.

    python benchmarks/attn_bench.py [--old path/to/old_paged_attention.py]

Variants change fields of the device's launch configs (``vllm_cuda.launch``: the NVIDIA table
entry, or on a ROCm torch the AMD one from ``vllm_rocm.launch_amd``), so the same script tunes
both tables.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
from collections.abc import Callable
from dataclasses import replace
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
import triton
from vllm_cuda.launch import LaunchConfigs

from vllm_core.attention.metadata import AttentionMetadata

HQ, HK, D, BLOCK = 16, 8, 128, 16


def load(path: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def paged_batch(q_lens: list[int], ctx_lens: list[int], dev: torch.device) -> tuple:
    """(q [T,Hq,D], k_cache, v_cache, metadata, dense k/v per request [B][Hk, S, D])."""
    gen = torch.Generator(device=dev).manual_seed(0)
    seq_lens = [c + q for c, q in zip(ctx_lens, q_lens)]
    nblk = [-(-s // BLOCK) for s in seq_lens]
    total = sum(nblk)
    perm = torch.randperm(total, device=dev, generator=gen).to(torch.int32)
    maxb = max(nblk)
    tables = torch.zeros(len(q_lens), maxb, dtype=torch.int32, device=dev)
    k_cache = torch.randn(total, BLOCK, HK, D, device=dev, dtype=torch.bfloat16, generator=gen)
    v_cache = torch.randn(total, BLOCK, HK, D, device=dev, dtype=torch.bfloat16, generator=gen)
    off = 0
    dense = []
    for i, n in enumerate(nblk):
        tables[i, :n] = perm[off:off + n]
        off += n
        idx = tables[i, :n].long()
        s = seq_lens[i]
        dense.append((k_cache[idx].reshape(-1, HK, D)[:s].transpose(0, 1), v_cache[idx].reshape(-1, HK, D)[:s].transpose(0, 1)))
    T = sum(q_lens)
    q = torch.randn(T, HQ, D, device=dev, dtype=torch.bfloat16, generator=gen)
    qsl = [0]
    for n in q_lens:
        qsl.append(qsl[-1] + n)
    md = AttentionMetadata(
        slot_mapping=torch.full((T,), -1, dtype=torch.int64, device=dev), block_tables=tables,
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=dev),
        query_start_loc=torch.tensor(qsl, dtype=torch.int32, device=dev), seq_lens_cpu=seq_lens,
        query_start_loc_cpu=qsl, max_query_len=max(q_lens), max_seq_len=max(seq_lens),
        num_decodes=sum(1 for n in q_lens if n == 1), block_size=BLOCK,
    )
    return q, k_cache, v_cache, md, dense


def sdpa_ref(q: torch.Tensor, md: AttentionMetadata, dense: list) -> torch.Tensor:
    out = torch.empty_like(q)
    qsl = md.query_start_loc_cpu
    for i, (k, v) in enumerate(dense):
        qi = q[qsl[i]:qsl[i + 1]].transpose(0, 1).unsqueeze(0)
        L, S = qi.shape[2], k.shape[1]
        mask = torch.ones(L, S, dtype=torch.bool, device=q.device).tril(S - L)
        o = F.scaled_dot_product_attention(qi, k.unsqueeze(0), v.unsqueeze(0), attn_mask=mask, enable_gqa=True,
                                           scale=D ** -0.5)
        out[qsl[i]:qsl[i + 1]] = o[0].transpose(0, 1)
    return out


def bench_prefill(mods: dict[str, ModuleType], defaults: LaunchConfigs, variants: list[dict], n_seqs: int, L: int,
                  dev: torch.device) -> list:
    q, kc, vc, md, dense = paged_batch([L] * n_seqs, [0] * n_seqs, dev)
    flops = 4 * HQ * D * n_seqs * L * (L + 1) / 2
    rows = []
    # SDPA flash on contiguous [B, H, L, D]
    qb = q.view(n_seqs, L, HQ, D).transpose(1, 2).contiguous()
    kb = torch.stack([k for k, _ in dense]).contiguous()
    vb = torch.stack([v for _, v in dense]).contiguous()
    sdpa = lambda: F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, enable_gqa=True)  # noqa: E731
    t = triton.testing.do_bench(sdpa, warmup=50, rep=300, return_mode="median")
    rows.append({"shape": f"{n_seqs}x{L}", "impl": "sdpa", "ms": t, "tflops": flops / t / 1e9})
    ref = sdpa().transpose(1, 2).reshape(-1, HQ, D)
    for v in variants:
        fn = functools.partial(configure(mods, defaults, v), q, kc, vc, md, D ** -0.5)
        out = fn()
        err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
        t = triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")
        rows.append({"shape": f"{n_seqs}x{L}", "impl": json.dumps(v), "ms": t, "tflops": flops / t / 1e9, "rel_err": err})
    return rows


KNOBS = {
    "PREFILL_BLOCK_M": "prefill_block_m", "PREFILL_BLOCK_N": "prefill_block_n",
    "PREFILL_NUM_WARPS": "prefill.num_warps", "PREFILL_NUM_STAGES": "prefill.num_stages",
    "SPLIT_KV_TARGET_PROGRAMS": "split_kv_target_programs", "SPLIT_KV_MAX_PROGRAMS": "split_kv_max_programs",
    "PARTITION_SIZE": "partition_size",
}
"""Variant keys -> fields of ``LaunchConfigs.attention`` (``launch.option`` for a ``Launch``'s)."""


def device_configs() -> LaunchConfigs:
    """The launch-config table entry of this GPU (NVIDIA, or AMD on a ROCm torch)."""
    if getattr(torch.version, "hip", None):
        from vllm_rocm.launch_amd import amd_launch_configs

        return amd_launch_configs(torch.cuda.get_device_properties(0).gcnArchName)
    from vllm_cuda.launch_nvidia import nvidia_launch_configs

    return nvidia_launch_configs(torch.cuda.get_device_capability())


def configure(mods: dict[str, ModuleType], base: LaunchConfigs, v: dict) -> Callable[..., torch.Tensor]:
    """The variant's ``paged_attention``: the new one with the variant's fields changed in the
    device's configs (every other field at its table value), or the old module's as it is."""
    if v["mod"] != "new":
        return mods[v["mod"]].paged_attention
    att = base.attention
    for k, val in v.items():
        if k == "mod":
            continue
        name, _, option = KNOBS[k].partition(".")
        att = replace(att, **{name: replace(getattr(att, name), **{option: val}) if option else val})
    return functools.partial(mods["new"].paged_attention, configs=replace(base, attention=att))


def bench_decode(mods: dict[str, ModuleType], defaults: LaunchConfigs, variants: list[dict], n: int, ctx: int,
                 dev: torch.device) -> list:
    q, kc, vc, md, dense = paged_batch([1] * n, [ctx - 1] * n, dev)
    ref = sdpa_ref(q, md, dense)
    nbytes = 2 * n * ctx * HK * D * 2
    rows = []
    for v in variants:
        name = json.dumps(v)
        fn = functools.partial(configure(mods, defaults, v), q, kc, vc, md, D ** -0.5)
        out = fn()
        err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
        t = triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")
        rows.append({"shape": f"decode {n}x{ctx}", "impl": name, "ms": t, "TB/s": nbytes / t / 1e9, "rel_err": err})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", default=None, help="an older paged_attention.py to compare with")
    ap.add_argument("--save-result", default=None)
    args = ap.parse_args()
    dev = torch.device("cuda")
    from vllm_cuda.ops import paged_attention as new

    mods: dict[str, ModuleType] = {"new": new}
    if args.old:
        mods["old"] = load(args.old, "old_paged_attention")
    defaults = device_configs()
    print(json.dumps({"configs": defaults.name, "attention": repr(defaults.attention)}))
    old: list[dict[str, Any]] = [{"mod": "old"}] if args.old else []
    variants: list[dict[str, Any]] = old + [{"mod": "new"}]
    for bm, bn, w, st in [(64, 64, 4, 3), (64, 32, 4, 2), (128, 32, 8, 2)]:
        variants.append({"mod": "new", "PREFILL_BLOCK_M": bm, "PREFILL_BLOCK_N": bn, "PREFILL_NUM_WARPS": w,
                         "PREFILL_NUM_STAGES": st})
    rows = []
    for n_seqs, L in [(14, 585), (8, 1024)]:
        rows += bench_prefill(mods, defaults, variants, n_seqs, L, dev)
    split = [{"mod": "new", "SPLIT_KV_MAX_PROGRAMS": 4096, "SPLIT_KV_TARGET_PROGRAMS": t} for t in (256, 1024)]
    for n, ctx in [(256, 1100), (64, 1400), (16, 1500), (4, 1500)]:
        rows += bench_decode(mods, defaults, old + [{"mod": "new"}] + split, n, ctx, dev)
    for r in rows:
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}))
    if args.save_result:
        with open(args.save_result, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
