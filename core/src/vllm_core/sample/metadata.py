"""``SamplingMetadata``: the sampling settings of one step's rows, as tensors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vllm_core.core.sched_output import ScheduledRequest


@dataclass
class SamplingMetadata:
    """One row per request that samples this step."""

    temperature: torch.Tensor
    """[R] float32; 0 for greedy rows."""
    top_k: torch.Tensor | None
    """[R] int64, 0 = off; None when no row uses it."""
    top_p: torch.Tensor | None
    """[R] float32, 1 = off; None when no row uses it."""
    min_p: torch.Tensor | None
    """[R] float32, 0 = off; None when no row uses it."""
    all_greedy: bool
    all_random: bool
    generators: dict[int, torch.Generator]
    """Row -> the request's own generator (seeded requests)."""
    banned_tokens: list[tuple[int, list[int]]]
    """(row, token ids) masked to -inf: EOS / stop ids before ``min_tokens`` is reached."""

    @classmethod
    def build(
        cls,
        rows: Sequence[ScheduledRequest],
        generators: dict[int, torch.Generator],
        device: torch.device,
    ) -> SamplingMetadata:
        params = [r.sampling_params for r in rows]
        temps = [0.0 if p.is_greedy else float(p.temperature) for p in params]
        greedy = [t == 0.0 for t in temps]
        top_k = [p.top_k for p in params]
        top_p = [p.top_p for p in params]
        min_p = [p.min_p for p in params]
        banned = []
        for i, r in enumerate(rows):
            p = r.sampling_params
            if r.num_output_tokens < p.min_tokens:
                ids = list(p.stop_token_ids or ())
                if r.eos_token_id is not None and not p.ignore_eos:
                    ids.append(r.eos_token_id)
                if ids:
                    banned.append((i, ids))
        return cls(
            temperature=torch.tensor(temps, dtype=torch.float32, device=device),
            top_k=torch.tensor(top_k, dtype=torch.int64, device=device) if any(top_k) else None,
            top_p=torch.tensor(top_p, dtype=torch.float32, device=device) if any(p < 1.0 for p in top_p) else None,
            min_p=torch.tensor(min_p, dtype=torch.float32, device=device) if any(min_p) else None,
            all_greedy=all(greedy),
            all_random=not any(greedy),
            generators=generators,
            banned_tokens=banned,
        )
