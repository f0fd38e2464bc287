"""Attention: the backend interface, its metadata and backend selection."""

from vllm_core.attention.backend import AttentionBackend
from vllm_core.attention.metadata import AttentionMetadata

__all__ = ["AttentionBackend", "AttentionMetadata"]
