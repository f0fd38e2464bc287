"""Per-request extension state: one typed object per feature, keyed by its class.

A feature defines a frozen dataclass subclassing ``RequestExtension`` and attaches it to the
request when it is made; every later stage reads it back by class, typed::

    @dataclass(frozen=True)
    class AdapterRef(RequestExtension):
        adapter_id: int
        digest: str

        def block_hash_extra_keys(self, block_index: int) -> tuple[BlockKey, ...]:
            return (("lora", self.digest),)

    request.extensions.get(AdapterRef)      # AdapterRef | None

The state crosses processes with the request (it must pickle) and is never a bag of flags:
each feature owns exactly one typed field of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar, Union

BlockKey = Union[str, int, bytes, tuple["BlockKey", ...]]
"""What an extension may add to a block hash: strings, ints, bytes and tuples of them (they have
a stable serialisation, so hashes agree across processes and runs)."""

E = TypeVar("E", bound="RequestExtension")


class RequestExtension:
    """Base class of a feature's per-request state (subclass it as a frozen dataclass)."""

    def block_hash_extra_keys(self, block_index: int) -> tuple[BlockKey, ...]:
        """What besides the token ids decides the KV content of full block ``block_index``.

        Blocks are hashed as a chain, so a key returned for block 0 already separates every
        later block; keys that concern a token range (an image's placeholder tokens) belong
        to the blocks that overlap it. Default: nothing."""
        return ()


class ExtensionState:
    """The extensions of one request, at most one per class, read back with ``get(cls)``."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[RequestExtension] = ()) -> None:
        self._items: dict[type[RequestExtension], RequestExtension] = {}
        for item in items:
            self.set(item)

    def get(self, cls: type[E]) -> E | None:
        """The request's ``cls`` extension, or None when the feature is not used."""
        item = self._items.get(cls)
        return item if item is None or isinstance(item, cls) else None

    def set(self, item: RequestExtension) -> None:
        """Attach (or replace) the extension of ``type(item)``."""
        if not isinstance(item, RequestExtension):
            raise TypeError(f"extension state must subclass RequestExtension, got {type(item).__name__}")
        self._items[type(item)] = item

    def block_hash_extra_keys(self, block_index: int) -> tuple[BlockKey, ...]:
        """Every extension's keys for one block, in a stable order (by class name)."""
        if not self._items:
            return ()
        keys: list[BlockKey] = []
        for cls in sorted(self._items, key=lambda c: (c.__module__, c.__qualname__)):
            keys.extend(self._items[cls].block_hash_extra_keys(block_index))
        return tuple(keys)

    def __iter__(self) -> Iterator[RequestExtension]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __getstate__(self) -> dict[type[RequestExtension], RequestExtension]:
        return self._items

    def __setstate__(self, state: dict[type[RequestExtension], RequestExtension]) -> None:
        self._items = state

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExtensionState) and self._items == other._items

    def __repr__(self) -> str:
        return f"ExtensionState({list(self._items.values())!r})"


@dataclass(frozen=True)
class CacheSalt(RequestExtension):
    """vLLM's ``cache_salt``: requests with different salts never share prefix-cache blocks
    (a tenant's prompts cannot be probed through cache timing by another tenant)."""

    salt: str

    def block_hash_extra_keys(self, block_index: int) -> tuple[BlockKey, ...]:
        # the first block's hash chains into every later one
        return (("cache_salt", self.salt),) if block_index == 0 else ()
