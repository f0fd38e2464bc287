"""Offline benchmarks with vLLM's names: ``vllm-core bench throughput`` and ``bench latency``.

``datasets`` makes the prompts, ``throughput`` and ``latency`` time the engine, ``engine``
starts it and describes where it runs, ``report`` turns results into tables and JSON, and
``cli`` is the click layer (the only place that prints).
"""
