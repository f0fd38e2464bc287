"""``/metrics``: Prometheus text named as vLLM names it, so vLLM's Grafana dashboard works.

Every series carries the labels ``model_name`` and ``engine`` (``"0"``: one engine core).
Scheduler and KV-cache numbers are read from the engine core at scrape time (gauges, and the
core's running totals as counters: ``vllm:prefix_cache_queries_total``,
``vllm:prefix_cache_hits_total``, ``vllm:num_preemptions_total``); the per-request counters and
histograms (tokens, success by reason, TTFT, inter-token latency, queue / prefill / decode /
inference / end-to-end time) are fed by every finished request, and
``vllm:iteration_tokens_total`` by every engine step. ``vllm:cache_config_info`` is a constant 1
labelled with the cache configuration. Features add gauges of their own through their step
constraint (``StepConstraint.info_gauges``, read at scrape time with the engine's numbers and
labelled as the feature says: LoRA's ``vllm:lora_requests_info`` has vLLM's three labels only). Counters have no ``_created`` series (as vLLM: they are
turned off for the whole process). Each server has its own registry, so several servers can live
in one process (tests).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from vllm_core.engine.async_llm import FinishedRequestStats
from vllm_core.engine.core_client import EngineStats
from vllm_core.spec_decode.metrics import SpecDecodeStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                    7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
_ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0)
_REQUEST_TIME_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
                         120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)


def _token_buckets(max_model_len: int) -> list[float]:
    """vLLM's 1-2-5 series up to the model length."""
    out: list[float] = []
    scale = 1
    while True:
        for m in (1, 2, 5):
            if m * scale > max_model_len:
                return out
            out.append(float(m * scale))
        scale *= 10


class _EngineCollector:
    """The core's numbers at scrape time, as gauges and (for its running totals) counters."""

    def __init__(self, labels: Mapping[str, str]) -> None:
        self.names = list(labels)
        self.values = list(labels.values())
        self.stats: EngineStats | None = None

    def _gauge(self, name: str, doc: str, value: float) -> Metric:
        g = GaugeMetricFamily(name, doc, labels=self.names)
        g.add_metric(self.values, value)
        return g

    def _counter(self, name: str, doc: str, value: float) -> Metric:
        c = CounterMetricFamily(name, doc, labels=self.names)
        c.add_metric(self.values, value)
        return c

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        if s is None:
            return
        yield self._gauge("vllm:num_requests_running", "Requests in the running batch.", s.num_running)
        yield self._gauge("vllm:num_requests_waiting", "Requests waiting to be scheduled.", s.num_waiting)
        yield self._gauge("vllm:kv_cache_usage_perc", "Fraction of KV-cache blocks in use (1 = full).",
                          s.kv_cache_usage)
        yield self._gauge("vllm:num_kv_cache_blocks", "KV-cache blocks in total.", s.num_kv_blocks)
        yield self._gauge("vllm:num_free_kv_cache_blocks", "KV-cache blocks not held by any request.",
                          s.num_free_kv_blocks)
        rate = s.prefix_cache_hits / s.prefix_cache_queries if s.prefix_cache_queries else 0.0
        yield self._gauge("vllm:prefix_cache_hit_rate", "Prefix-cache hits / queries (0 when none).", rate)
        yield self._counter("vllm:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.",
                            s.prefix_cache_queries)
        yield self._counter("vllm:prefix_cache_hits", "Prompt tokens found in the prefix cache.", s.prefix_cache_hits)
        yield self._counter("vllm:num_preemptions", "Requests preempted (recomputed) so far.", s.num_preemptions)
        for info in s.info_gauges:  # features' samples, with their own labels only
            g = GaugeMetricFamily(info.name, info.documentation, labels=[k for k, _ in info.labels])
            g.add_metric([v for _, v in info.labels], info.value)
            yield g


class ServerMetrics:
    """The metric objects of one server, labelled with the served model name and the engine."""

    def __init__(self, model_name: str, max_model_len: int = 8192,
                 cache_config: Mapping[str, Any] | None = None) -> None:
        prometheus_client.disable_created_metrics()
        self.registry = r = CollectorRegistry()
        self.labels = {"model_name": model_name, "engine": "0"}
        names = list(self.labels)
        self.engine = _EngineCollector(self.labels)
        r.register(self.engine)  # type: ignore[arg-type]

        def counter(name: str, doc: str, extra: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, [*names, *extra], registry=r)

        def hist(name: str, doc: str, buckets: Any) -> Histogram:
            return Histogram(name, doc, names, buckets=buckets, registry=r)

        self.prompt_tokens = counter("vllm:prompt_tokens", "Prompt tokens processed.")
        self.generation_tokens = counter("vllm:generation_tokens", "Tokens generated.")
        self.request_success = counter("vllm:request_success", "Finished requests by reason.", ("finished_reason",))
        tokens = _token_buckets(max_model_len)
        self.request_prompt_tokens = hist("vllm:request_prompt_tokens", "Prompt tokens per request.", tokens)
        self.request_generation_tokens = hist("vllm:request_generation_tokens", "Generated tokens per request.",
                                              tokens)
        self.iteration_tokens = hist("vllm:iteration_tokens_total", "Tokens scheduled per engine step.",
                                     [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384])
        self.ttft = hist("vllm:time_to_first_token_seconds", "Time to first token.", _LATENCY_BUCKETS)
        self.itl = hist("vllm:inter_token_latency_seconds", "Time between consecutive output tokens.", _ITL_BUCKETS)
        self.tpot = hist("vllm:request_time_per_output_token_seconds",
                         "Mean time per output token after the first, per request.", _ITL_BUCKETS)
        self.tpot_legacy = hist("vllm:time_per_output_token_seconds",
                                "Deprecated name of vllm:request_time_per_output_token_seconds.", _ITL_BUCKETS)
        self.e2e = hist("vllm:e2e_request_latency_seconds", "End-to-end request latency.", _REQUEST_TIME_BUCKETS)
        self.queue = hist("vllm:request_queue_time_seconds", "Time from arrival to first scheduling.",
                          _REQUEST_TIME_BUCKETS)
        self.prefill = hist("vllm:request_prefill_time_seconds", "Time from first scheduling to the first token.",
                            _REQUEST_TIME_BUCKETS)
        self.decode = hist("vllm:request_decode_time_seconds", "Time from the first token to the last.",
                           _REQUEST_TIME_BUCKETS)
        self.inference = hist("vllm:request_inference_time_seconds",
                              "Time from first scheduling to the last token.", _REQUEST_TIME_BUCKETS)
        info_labels = {**(cache_config or {}), "engine": "0"}
        info = prometheus_client.Gauge("vllm:cache_config_info", "The KV-cache configuration (value 1).",
                                       sorted(info_labels), registry=r)
        info.labels(**{k: str(v) for k, v in info_labels.items()}).set(1)
        self.spec_decode = SpecDecodeMetrics(r, names)

    def observe_finished(self, stats: FinishedRequestStats) -> None:
        lab = self.labels
        self.prompt_tokens.labels(**lab).inc(stats.num_prompt_tokens)
        self.generation_tokens.labels(**lab).inc(stats.num_generation_tokens)
        self.request_success.labels(**lab, finished_reason=stats.finish_reason or "unknown").inc()
        self.request_prompt_tokens.labels(**lab).observe(stats.num_prompt_tokens)
        self.request_generation_tokens.labels(**lab).observe(stats.num_generation_tokens)
        self.e2e.labels(**lab).observe(stats.e2e_latency)
        for hist, value in ((self.ttft, stats.ttft), (self.tpot, stats.tpot), (self.tpot_legacy, stats.tpot),
                            (self.queue, stats.queue_time), (self.prefill, stats.prefill_time),
                            (self.decode, stats.decode_time), (self.inference, stats.inference_time)):
            if value is not None:
                hist.labels(**lab).observe(value)
        itl = self.itl.labels(**lab)
        for gap in stats.inter_token_latencies:
            itl.observe(gap)

    def observe_iterations(self, step_tokens: list[int]) -> None:
        hist = self.iteration_tokens.labels(**self.labels)
        for n in step_tokens:
            hist.observe(n)

    def render(self, stats: EngineStats | None) -> bytes:
        self.engine.stats = stats
        if stats is not None and stats.spec_decode is not None:
            self.spec_decode.update(stats.spec_decode, self.labels)
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
