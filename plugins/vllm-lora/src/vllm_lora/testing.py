"""LoRA conformance checks: subclass ``LoRAOpsConformance`` in a platform's tests, as with the
core kit's ``OpsConformance`` (the same ``conformance_platform`` fixture, ``--vllm-platform``)::

    from vllm_lora.testing import LoRAOpsConformance

    class TestAcmeLoRA(LoRAOpsConformance):
        pass

The op the platform gets (``select_lora_ops``: Triton on CUDA, PyTorch elsewhere) runs on the
platform's device against the definition computed in float64 on the host: mixed steps (base
rows, several slots of different effective ranks, prefill segments, padding rows), every
projection layout (3, 2 and 1 output slices), each dtype the platform supports.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from vllm_lora.ops import select_lora_ops

LAYOUTS = {"qkv": (64, 32, 32), "gate_up": (48, 48), "o": (40,)}
STEPS = {"decode": (1, 9), "mixed": (37, 5), "prefill": (130, 40), "base_only": (21, 0)}
"""name -> (tokens, tokens of the first prefill segment; 0: no adapter row at all)"""


def make_step(tokens: int, segment: int, sizes: tuple[int, ...], dtype: torch.dtype, seed: int = 0,
              k: int = 48, slots: int = 3, rank: int = 16) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    a = torch.zeros(len(sizes), slots, rank, k)
    b = [torch.zeros(slots, rank, n) for n in sizes]
    for slot, r in enumerate((4, rank, 8)[:slots]):  # effective ranks 4, 16, 8: zero-padded
        a[:, slot, :r] = torch.randn(len(sizes), r, k, generator=g)
        for bs in b:
            bs[slot, :r] = torch.randn(r, bs.shape[-1], generator=g) * 0.5
    token_slots = torch.randint(-1, slots, (tokens,), generator=g)
    if segment == 0:
        token_slots.fill_(-1)
    else:
        token_slots[: min(segment, tokens)] = 1
    token_slots[-2:] = -1  # padding rows
    return {
        "out": torch.randn(tokens, sum(sizes), generator=g).to(dtype), "x": torch.randn(tokens, k, generator=g).to(dtype),
        "a": a.to(dtype), "b": [t.to(dtype) for t in b], "offsets": [sum(sizes[:i]) for i in range(len(sizes))],
        "slots": token_slots, "scaling": torch.tensor([0.5, 2.0, 1.25][:slots]),
    }


def definition(step: dict[str, Any]) -> torch.Tensor:
    """out + scaling[slot] * (x @ A^T) @ B^T per token, in float64."""
    out = step["out"].double().clone()
    x, a = step["x"].double(), step["a"].double()
    for t, slot in enumerate(step["slots"].tolist()):
        if slot < 0:
            continue
        for s, (b, off) in enumerate(zip(step["b"], step["offsets"])):
            out[t, off: off + b.shape[-1]] += float(step["scaling"][slot]) * ((x[t] @ a[s, slot].t()) @ b[slot].double())
    return out


class LoRAOpsConformance:
    """The platform's batched LoRA op against the definition."""

    @pytest.mark.parametrize("layout", sorted(LAYOUTS))
    @pytest.mark.parametrize("step_kind", sorted(STEPS))
    def test_add_lora(self, conformance_platform: Any, layout: str, step_kind: str) -> None:
        platform = conformance_platform
        device = platform.device()
        ops = select_lora_ops(platform)
        for dtype in [d for d in (torch.float32, torch.bfloat16) if d in platform.supported_dtypes()]:
            tokens, segment = STEPS[step_kind]
            step = make_step(tokens, segment, LAYOUTS[layout], dtype)
            want = definition(step)
            out = step["out"].to(device)
            ops.add_lora(out, step["x"].to(device), step["a"].to(device), torch.cat(step["b"], -1).to(device),
                         LAYOUTS[layout], step["slots"].to(device), step["scaling"].to(device))
            got = out.double().cpu()
            span = float((want - step["out"].double()).abs().max()) or 1.0
            tol = 1e-4 if dtype == torch.float32 else 2e-2
            err = float((got - want).abs().max())
            assert err <= tol * span + (1e-5 if dtype == torch.float32 else 1e-2) * float(want.abs().max()), (
                f"{ops.name} LoRA op on {platform.name} ({dtype}, {layout}, {step_kind}): max error {err:.3g}, "
                f"delta span {span:.3g}"
            )
