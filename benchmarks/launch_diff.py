"""Do two trees' Triton kernel wrappers launch the same kernels the same way? (CPU only, ~20 s)

Runs the wrappers of ``vllm_cuda`` from each tree on CPU tensors over a grid of dtypes, hidden
sizes, head sizes and batch shapes (prefill, decode, mixed, long decodes; split-KV on, off and
automatic) with every ``kernel[grid](...)`` recorded instead of run, and compares the records:
kernel, grid, launch options, and every argument (tensors by dtype and shape, scalars by value).
The new tree runs with its default configs (the generic NVIDIA entry, equal to ``sm_90``).

    git archive <old-rev> plugins/vllm-cuda | (mkdir -p .base && tar -x -C .base)
    python benchmarks/launch_diff.py .base/plugins/vllm-cuda/src plugins/vllm-cuda/src
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

RECORD = r'''
import inspect, json, os, sys
os.environ["TRITON_INTERPRET"] = "1"
sys.path.insert(0, sys.argv[1])
import torch
from triton.runtime.jit import KernelInterface
from vllm_core.plugins.api import AttentionMetadata
records = []

def getitem(self, grid):
    def launch(*args, **kwargs):
        params = inspect.signature(self.fn).parameters
        bound = inspect.signature(self.fn).bind(*args, **{k: v for k, v in kwargs.items() if k in params})
        args = {k: [str(v.dtype), list(v.shape)] if isinstance(v, torch.Tensor) else v for k, v in bound.arguments.items()}
        records.append([self.fn.__name__, str(grid), {k: v for k, v in kwargs.items() if k not in params}, args])
    return launch

KernelInterface.__getitem__ = getitem
from vllm_cuda.ops.activation import silu_and_mul
from vllm_cuda.ops.kv_cache import reshape_and_cache
from vllm_cuda.ops.norm import fused_add_rms_norm, rms_norm
from vllm_cuda.ops.paged_attention import paged_attention
from vllm_cuda.ops.rotary import qk_norm_rotary, rotary_embedding
from vllm_cuda.sampler import gumbel_argmax

def metadata(q_lens, ctx, bs=16):
    seq = [c + q for c, q in zip(ctx, q_lens)]
    st = [0]
    for q in q_lens:
        st.append(st[-1] + q)
    n, mb = len(q_lens), max(-(-s // bs) for s in seq)
    return AttentionMetadata(
        slot_mapping=torch.zeros(st[-1], dtype=torch.int64), block_tables=torch.zeros(n, mb, dtype=torch.int32),
        seq_lens=torch.tensor(seq, dtype=torch.int32), query_start_loc=torch.tensor(st, dtype=torch.int32),
        seq_lens_cpu=seq, query_start_loc_cpu=st, max_query_len=max(q_lens), max_seq_len=max(seq),
        num_decodes=sum(q == 1 for q in q_lens), block_size=bs)

for dt in (torch.bfloat16, torch.float16, torch.float32):
    for hidden in (64, 1000, 4096, 8192):
        x, w = torch.zeros(4, hidden, dtype=dt), torch.zeros(hidden, dtype=dt)
        rms_norm(x, w, 1e-6)
        fused_add_rms_norm(x, x.clone(), w, 1e-6)
        silu_and_mul(torch.zeros(4, 2 * hidden, dtype=dt))
    for d in (64, 128, 256):
        q, k = torch.zeros(4, 16, d, dtype=dt), torch.zeros(4, 8, d, dtype=dt)
        pos, cs = torch.zeros(4, dtype=torch.int64), torch.zeros(64, d)
        rotary_embedding(pos, q, k, cs)
        qk_norm_rotary(pos, q, k, torch.zeros(d, dtype=dt), torch.zeros(d, dtype=dt), 1e-6, cs)
        reshape_and_cache(k, k.clone(), torch.zeros(8, 16, 8, d, dtype=dt), torch.zeros(8, 16, 8, d, dtype=dt), pos)
        for ql, cl in (([1] * 4, [40] * 4), ([100, 1], [30, 60]), ([1, 1], [900, 300]), ([1] * 64, [300] * 64),
                       ([1, 1, 9, 4], [150, 33, 70, 0])):
            for split in (None, True, False):
                md = metadata(ql, cl)
                cache = torch.zeros(md.block_tables.numel(), 16, 8, d, dtype=dt)
                paged_attention(torch.zeros(md.num_tokens, 16, d, dtype=dt), cache, cache.clone(), md, d ** -0.5,
                                split_kv=split)
    for rows, vocab in ((2, 151936), (3, 5000)):
        gumbel_argmax(torch.zeros(rows, vocab, dtype=dt), torch.ones(rows), 0)
import vllm_cuda
print(json.dumps({"module": vllm_cuda.__file__, "records": records}, default=str))
'''


def record(src: str) -> tuple[str, list]:
    """(the vllm_cuda module that ran, its launch records)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", RECORD, src], capture_output=True, text=True, env=env, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["module"], result["records"]


def main() -> int:
    old_src, new_src = sys.argv[1], sys.argv[2]
    (old_module, old), (new_module, new) = record(old_src), record(new_src)
    differ = [(i, a, b) for i, (a, b) in enumerate(zip(old, new)) if a != b]
    print(json.dumps({"old": old_module, "new": new_module, "old_launches": len(old), "new_launches": len(new), "differing": len(differ),
                      "identical": len(old) == len(new) and not differ}))
    for i, a, b in differ[:5]:
        print(json.dumps({"index": i, "old": a, "new": b}))
    return 0 if len(old) == len(new) and not differ else 1


if __name__ == "__main__":
    sys.exit(main())
