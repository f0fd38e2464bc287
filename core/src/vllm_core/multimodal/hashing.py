"""Content hashes of multimodal items: the same pixels give the same hash, in any process.

The hash keys the encoder cache (the same image twice is encoded once) and the prefix cache's
block hashes (the same text with another image never shares KV blocks). It reads the item's
pixels, never its file name or object identity.
"""

from __future__ import annotations

import hashlib
from typing import Any


def hash_item(modality: str, item: Any) -> str:
    """SHA-256 (hex) of one item: a PIL image (mode, size and pixel bytes), raw ``bytes``, or
    anything with ``tobytes()`` and a ``shape`` (numpy arrays, tensors via ``.numpy()``)."""
    h = hashlib.sha256(modality.encode())
    if hasattr(item, "mode") and hasattr(item, "size") and hasattr(item, "tobytes"):  # PIL.Image
        h.update(f"{item.mode}:{item.size[0]}x{item.size[1]}".encode())
        h.update(item.tobytes())
    elif isinstance(item, (bytes, bytearray)):
        h.update(bytes(item))
    elif hasattr(item, "tobytes") and hasattr(item, "shape"):
        h.update(f"{tuple(item.shape)}:{getattr(item, 'dtype', '')}".encode())
        h.update(item.tobytes())
    else:
        raise TypeError(
            f"cannot hash a {modality} of type {type(item).__name__}; give a PIL.Image, bytes or an array"
        )
    return h.hexdigest()
