"""Sampling: the ``Sampler`` interface, its batched metadata and the reference sampler."""

from vllm_core.sample.metadata import SamplingMetadata
from vllm_core.sample.sampler import ReferenceSampler, Sampler

__all__ = ["ReferenceSampler", "Sampler", "SamplingMetadata"]
