"""``/metrics``: Prometheus text with vLLM's metric names.

Gauges (running/waiting requests, KV usage, prefix-cache counters) are read from the engine core
at scrape time; counters and latency histograms are fed by every finished request. Each server
has its own registry, so several servers can live in one process (tests).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from vllm_core.engine.async_llm import FinishedRequestStats
from vllm_core.engine.core_client import EngineStats
from vllm_core.spec_decode.metrics import SpecDecodeStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                    7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0)


class ServerMetrics:
    """The metric objects of one server, labelled with the served model name."""

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        self.labels = {"model_name": model_name}
        names = ["model_name"]
        r = self.registry

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, names, registry=r)

        self.running = gauge("vllm:num_requests_running", "Requests in the running batch.")
        self.waiting = gauge("vllm:num_requests_waiting", "Requests waiting to be scheduled.")
        self.kv_usage = gauge("vllm:kv_cache_usage_perc", "Fraction of KV-cache blocks in use (1 = full).")
        self.kv_blocks = gauge("vllm:num_kv_cache_blocks", "KV-cache blocks in total.")
        self.kv_free = gauge("vllm:num_free_kv_cache_blocks", "KV-cache blocks not held by any request.")
        self.prefix_queries = gauge("vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.")
        self.prefix_hits = gauge("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache.")
        self.prefix_hit_rate = gauge("vllm:prefix_cache_hit_rate", "Prefix-cache hits / queries (0 when none).")
        self.preemptions = gauge("vllm:num_preemptions", "Requests preempted (recomputed) so far.")
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prompt tokens processed.", names, registry=r)
        self.generation_tokens = Counter("vllm:generation_tokens", "Tokens generated.", names, registry=r)
        self.request_success = Counter(
            "vllm:request_success", "Finished requests by reason.", [*names, "finished_reason"], registry=r
        )

        def hist(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, names, buckets=_LATENCY_BUCKETS, registry=r)

        self.ttft = hist("vllm:time_to_first_token_seconds", "Time to first token.")
        self.tpot = hist("vllm:time_per_output_token_seconds", "Mean time per output token after the first.")
        self.e2e = hist("vllm:e2e_request_latency_seconds", "End-to-end request latency.")
        self.spec_decode = SpecDecodeMetrics(r, names)

    def observe_finished(self, stats: FinishedRequestStats) -> None:
        lab = self.labels
        self.prompt_tokens.labels(**lab).inc(stats.num_prompt_tokens)
        self.generation_tokens.labels(**lab).inc(stats.num_generation_tokens)
        self.request_success.labels(**lab, finished_reason=stats.finish_reason or "unknown").inc()
        self.e2e.labels(**lab).observe(stats.e2e_latency)
        if stats.ttft is not None:
            self.ttft.labels(**lab).observe(stats.ttft)
        if stats.tpot is not None:
            self.tpot.labels(**lab).observe(stats.tpot)

    def render(self, stats: EngineStats | None) -> bytes:
        if stats is not None:
            lab = self.labels
            self.running.labels(**lab).set(stats.num_running)
            self.waiting.labels(**lab).set(stats.num_waiting)
            self.kv_usage.labels(**lab).set(stats.kv_cache_usage)
            self.kv_blocks.labels(**lab).set(stats.num_kv_blocks)
            self.kv_free.labels(**lab).set(stats.num_free_kv_blocks)
            self.prefix_queries.labels(**lab).set(stats.prefix_cache_queries)
            self.prefix_hits.labels(**lab).set(stats.prefix_cache_hits)
            rate = stats.prefix_cache_hits / stats.prefix_cache_queries if stats.prefix_cache_queries else 0.0
            self.prefix_hit_rate.labels(**lab).set(rate)
            self.preemptions.labels(**lab).set(stats.num_preemptions)
            if stats.spec_decode is not None:
                self.spec_decode.update(stats.spec_decode, lab)
        return generate_latest(self.registry)


class SpecDecodeMetrics:
    """vLLM's speculative-decoding counters. The core keeps cumulative totals; each scrape adds
    what they grew by since the last one (a Prometheus counter only goes up)."""

    def __init__(self, registry: CollectorRegistry, names: list[str]) -> None:
        r = registry
        self.drafts = Counter("vllm:spec_decode_num_drafts", "Verified steps of requests with drafts.", names, registry=r)
        self.draft_tokens = Counter("vllm:spec_decode_num_draft_tokens", "Draft tokens verified.", names, registry=r)
        self.accepted = Counter("vllm:spec_decode_num_accepted_tokens", "Draft tokens accepted.", names, registry=r)
        self.per_pos = Counter(
            "vllm:spec_decode_num_accepted_tokens_per_pos", "Accepted draft tokens by position.",
            [*names, "position"], registry=r,
        )
        self._last = SpecDecodeStats()

    def update(self, stats: SpecDecodeStats, labels: dict[str, str]) -> None:
        last, self._last = self._last, stats
        self.drafts.labels(**labels).inc(stats.num_drafts - last.num_drafts)
        self.draft_tokens.labels(**labels).inc(stats.num_draft_tokens - last.num_draft_tokens)
        self.accepted.labels(**labels).inc(stats.num_accepted_tokens - last.num_accepted_tokens)
        before = last.accepted_per_pos or (0,) * len(stats.accepted_per_pos)
        for pos, (now, then) in enumerate(zip(stats.accepted_per_pos, before)):
            self.per_pos.labels(**labels, position=str(pos)).inc(now - then)
