"""Multimodal inputs (images) for vision-language models."""
