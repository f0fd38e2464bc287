"""The OpenAI-compatible (and Anthropic Messages) HTTP server of ``vllm-core serve``."""
