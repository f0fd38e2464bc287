"""Summaries of measurements, the printed result table and the saved JSON."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

PERCENTILES = (10, 25, 50, 75, 90, 99)
"""The percentiles vLLM's ``bench latency`` saves."""


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile with linear interpolation (numpy's default method)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class Stats:
    """Mean, median and p99 of one metric (seconds), with vLLM's percentile table."""

    mean: float
    median: float
    p99: float
    percentiles: dict[str, float]

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        return cls(
            mean=sum(values) / len(values),
            median=percentile(values, 50),
            p99=percentile(values, 99),
            percentiles={str(p): percentile(values, p) for p in PERCENTILES},
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_table(title: str, rows: Sequence[tuple[str, Any]], width: int = 50) -> str:
    """A two-column table in the style of vLLM's benchmark summaries."""
    lines = [f" {title} ".center(width, "=")]
    for label, value in rows:
        text = f"{value:.2f}" if isinstance(value, float) else str(value)
        lines.append(f"{label + ':':<{width - 14}}{text:>14}")
    lines.append("=" * width)
    return "\n".join(lines)


def save_result(path: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON, creating the parent directory when needed."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, default=str)
        f.write("\n")
