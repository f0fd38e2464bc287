"""User-facing entry points: the ``LLM`` class and the ``vllm-core`` CLI."""
