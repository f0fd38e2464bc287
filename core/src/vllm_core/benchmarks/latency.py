"""``bench latency``: one batch at a time, timed end to end, with time to first token and per
output token from the engine's step loop (``vllm bench latency`` plus TTFT/TPOT)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from vllm_core.benchmarks.datasets import RandomDataset
from vllm_core.benchmarks.report import Stats
from vllm_core.benchmarks.throughput import sampling_params
from vllm_core.engine.llm_engine import LLMEngine
from vllm_core.entrypoints.llm import LLM
from vllm_core.sampling_params import SamplingParams


@dataclass(frozen=True)
class BatchTiming:
    """One iteration: the batch's wall time and each request's first-token and finish times."""

    latency: float
    """Seconds from the first ``add_request`` to the last request finishing."""
    ttfts: list[float]
    """Per request: seconds from the iteration's start to its first output token."""
    finish_times: list[float]
    """Per request: seconds from the iteration's start to its last output token."""

    def tpots(self, output_len: int) -> list[float]:
        """Per request ``(finish - ttft) / (output_len - 1)``; empty when one token is generated."""
        if output_len < 2:
            return []
        return [(e2e - ttft) / (output_len - 1) for e2e, ttft in zip(self.finish_times, self.ttfts)]


def time_batch(engine: LLMEngine, prompts: list[list[int]], params: SamplingParams) -> BatchTiming:
    """Add every prompt, then ``step()`` until all finish, noting when each produced its first token."""
    start = time.perf_counter()
    ids = []
    for p in prompts:
        rid = engine.next_request_id()
        engine.add_request(rid, {"prompt_token_ids": p}, params)
        ids.append(rid)
    first: dict[str, float] = {}
    done: dict[str, float] = {}
    try:
        while len(done) < len(ids):
            outputs = engine.step()
            now = time.perf_counter() - start
            for out in outputs:
                if out.request_id not in first and out.outputs and out.outputs[0].token_ids:
                    first[out.request_id] = now
                if out.finished:
                    done[out.request_id] = now
    except BaseException:
        engine.abort_request([rid for rid in ids if rid not in done])
        raise
    return BatchTiming(max(done.values()), [first[r] for r in ids], [done[r] for r in ids])


@dataclass(frozen=True)
class LatencyResult:
    """All timed iterations of one batch shape, summarised."""

    batch_size: int
    input_len: int
    output_len: int
    timings: list[BatchTiming]

    @property
    def latencies(self) -> list[float]:
        return [t.latency for t in self.timings]

    @property
    def latency(self) -> Stats:
        """End-to-end seconds per iteration."""
        return Stats.of(self.latencies)

    @property
    def ttft(self) -> Stats:
        """Time to first token, over every request of every iteration."""
        return Stats.of([x for t in self.timings for x in t.ttfts])

    @property
    def tpot(self) -> Stats | None:
        """Time per output token after the first; None when ``output_len`` is 1."""
        values = [x for t in self.timings for x in t.tpots(self.output_len)]
        return Stats.of(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        """vLLM's keys (``avg_latency``, ``latencies``, ``percentiles``) plus TTFT and TPOT."""
        latency, tpot = self.latency, self.tpot
        return {
            "batch_size": self.batch_size,
            "input_len": self.input_len,
            "output_len": self.output_len,
            "num_iters": len(self.timings),
            "avg_latency": latency.mean,
            "latencies": self.latencies,
            "percentiles": latency.percentiles,
            "latency": latency.to_dict(),
            "ttft": self.ttft.to_dict(),
            "tpot": tpot.to_dict() if tpot else None,
            "output_tokens_per_second": self.batch_size * self.output_len / latency.mean,
        }

    def table_rows(self) -> list[tuple[str, Any]]:
        rows: list[tuple[str, Any]] = [
            ("Batch size", self.batch_size),
            ("Input / output len", f"{self.input_len} / {self.output_len}"),
            ("Iterations", len(self.timings)),
        ]
        for name, stats, scale in (
            ("E2E latency (ms)", self.latency, 1e3), ("TTFT (ms)", self.ttft, 1e3), ("TPOT (ms)", self.tpot, 1e3),
        ):
            if stats is None:
                continue
            rows += [(f"Mean {name}", stats.mean * scale), (f"Median {name}", stats.median * scale),
                     (f"P99 {name}", stats.p99 * scale)]
        return rows


def run_latency(
    llm: LLM,
    batch_size: int,
    input_len: int,
    output_len: int,
    num_iters_warmup: int,
    num_iters: int,
    seed: int = 0,
    temperature: float = 0.0,
) -> LatencyResult:
    """Warm up, then time ``num_iters`` batches of ``batch_size`` random prompts.

    Every iteration draws new prompts: repeating them (as vLLM does) would make later iterations
    prefix-cache hits and shrink TTFT to almost nothing.
    """
    if min(batch_size, input_len, output_len, num_iters) < 1 or num_iters_warmup < 0:
        raise ValueError(
            f"batch_size, input_len, output_len and num_iters must be >= 1 and num_iters_warmup >= 0; got "
            f"{batch_size}, {input_len}, {output_len}, {num_iters}, {num_iters_warmup}"
        )
    engine = llm.llm_engine
    vocab = engine.loaded.text_config.vocab_size
    params = sampling_params(output_len, temperature)
    timings = []
    for i in range(num_iters_warmup + num_iters):
        dataset = RandomDataset((input_len, input_len), (output_len, output_len), seed + i)
        prompts = [r.prompt_token_ids for r in dataset.sample(batch_size, vocab)]
        timing = time_batch(engine, prompts, params)
        if i >= num_iters_warmup:
            timings.append(timing)
    return LatencyResult(batch_size, input_len, output_len, timings)
