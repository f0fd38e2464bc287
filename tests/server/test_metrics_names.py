"""``/metrics`` as vLLM names it (its Grafana dashboard's queries): counters end in ``_total``,
no ``_created`` series, the ``model_name`` and ``engine`` labels everywhere, inter-token latency,
queue / prefill / decode / inference time, tokens per engine step, and the cache config info."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import RunningServer


def _scrape(url: str) -> tuple[dict[str, str], dict[str, float], list[dict[str, str]]]:
    """(family -> type, sample name -> value summed over series, every sample's labels)."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    types, values, labels = {}, {}, []
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            values[s.name] = values.get(s.name, 0.0) + s.value
            labels.append(dict(s.labels))
    assert not [line for line in text.splitlines() if "_created" in line], "vLLM exposes no _created series"
    return types, values, labels


def test_vllm_metric_names(server: RunningServer) -> None:
    _, before, _ = _scrape(server.url)
    r = httpx.post(f"{server.url}/v1/completions", timeout=60, json={
        "prompt": "metrics names check", "max_tokens": 5, "ignore_eos": True})
    assert r.status_code == 200
    prompt_tokens = r.json()["usage"]["prompt_tokens"]
    types, after, labels = _scrape(server.url)

    def delta(name: str) -> float:
        return after[name] - before.get(name, 0.0)

    for name in ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits", "vllm:num_preemptions",
                 "vllm:prompt_tokens", "vllm:generation_tokens", "vllm:request_success"):
        assert types[name] == "counter" and f"{name}_total" in after, name
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"):
        assert types[name] == "gauge", name
    assert delta("vllm:generation_tokens_total") == 5 and delta("vllm:prompt_tokens_total") == prompt_tokens
    assert delta("vllm:inter_token_latency_seconds_count") == 4
    for name in ("time_to_first_token", "e2e_request_latency", "request_queue_time", "request_prefill_time",
                 "request_decode_time", "request_inference_time", "request_time_per_output_token"):
        assert types[f"vllm:{name}_seconds"] == "histogram"
        assert delta(f"vllm:{name}_seconds_count") == 1, name
    parts = sum(delta(f"vllm:request_{p}_time_seconds_sum") for p in ("queue", "prefill", "decode"))
    assert parts <= delta("vllm:e2e_request_latency_seconds_sum") + 1e-3
    assert delta("vllm:request_inference_time_seconds_sum") <= delta("vllm:e2e_request_latency_seconds_sum") + 1e-3
    # One prefill step (the prompt) and four decode steps (the last token is never fed back).
    assert delta("vllm:iteration_tokens_total_sum") == prompt_tokens + 4
    assert delta("vllm:iteration_tokens_total_count") == 5
    assert after["vllm:cache_config_info"] == 1
    info = next(lab for lab in labels if "block_size" in lab)
    assert info["block_size"] == "16" and info["num_gpu_blocks"] == "96"
    assert all(lab.get("engine") == "0" and lab.get("model_name") == server.model
               for lab in labels if "block_size" not in lab), "every series has the engine and model_name labels"
