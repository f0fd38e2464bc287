"""The encoder cache: vision-encoder outputs by image content hash.

An image's embeddings are computed once and read by every step that schedules part of its
placeholder range (chunked prefill may cut through it) and by every request with the same
image. Entries are evicted least recently used when the cache holds more than ``capacity``
rows, never those the current step reads.
"""

from __future__ import annotations

from collections import OrderedDict

import torch


class EncoderCache:
    """identifier -> [num_tokens, hidden] tensor on the device, with counters."""

    def __init__(self, capacity_tokens: int) -> None:
        self.capacity = capacity_tokens
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._rows = 0
        self.hits = 0
        """Lookups answered from the cache."""
        self.encoder_runs = 0
        """Items the encoder ran for (the same image twice, cached: one run)."""
        self.encoder_seconds = 0.0
        """Wall time spent in the encoder (host clock around each batch, synchronised), counted
        while the extension's ``time_encoder`` is on."""

    def get(self, identifier: str) -> torch.Tensor | None:
        item = self._items.get(identifier)
        if item is not None:
            self._items.move_to_end(identifier)
            self.hits += 1
        return item

    def put(self, identifier: str, embeddings: torch.Tensor, keep: set[str]) -> None:
        """Add an item; evict the least recently used ones beyond capacity except ``keep``."""
        self._items[identifier] = embeddings
        self._rows += embeddings.shape[0]
        for old in list(self._items):
            if self._rows <= self.capacity:
                break
            if old in keep:
                continue
            self._rows -= self._items.pop(old).shape[0]

    def __contains__(self, identifier: object) -> bool:
        return identifier in self._items

    def __len__(self) -> int:
        return len(self._items)
