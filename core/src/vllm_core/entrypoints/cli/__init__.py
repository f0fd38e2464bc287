"""The ``vllm-core`` command line (click)."""
