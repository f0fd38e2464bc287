"""Static step shapes: platform-chosen buckets that every step's inputs are padded to.

Backends that compile a graph per input shape (XLA; CUDA graphs; the CPU's recorded plans) want
few distinct shapes. A platform returns a ``StepShapes`` from ``Platform.step_shapes``; the
runner then pads *every* step (prefills and mixed steps too, not only pure decodes) to the
smallest bucket of each dimension that holds it:

* tokens: ``input_ids`` 0, ``positions`` 0, ``slot_mapping`` ``PAD_SLOT_ID`` (the KV write
  skips the row);
* requests: one token each while padding tokens last, else none; ``seq_len`` ``PAD_SEQ_LEN``,
  a block-table row of zeros (their attention reads one slot of block 0 and is thrown away);
* padding tokens beyond the padded requests belong to no request (past
  ``query_start_loc[-1]``): attention backends leave their rows zero, nothing reads them;
* block-table width: zeros;
* logits rows: pointed at token 0, dropped before sampling.

Padded rows touch nothing: no KV is written for them and no real row attends to them. The
decode buffers that graph runners replay (``DecodeBuffers``) use the same buckets and fills.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

PAD_SLOT_ID = -1
"""``slot_mapping`` of a padded token: the KV write skips it."""
PAD_SEQ_LEN = 1
"""``seq_lens`` of a padded request: its attention reads one slot of block 0."""


def pow2_buckets(lo: int, hi: int) -> tuple[int, ...]:
    """``lo, 2 lo, 4 lo, ...`` up to and including ``hi`` (``hi`` itself is always a bucket)."""
    out, b = [], max(lo, 1)
    while b < hi:
        out.append(b)
        b *= 2
    out.append(hi)
    return tuple(out)


def _smallest(buckets: Sequence[int], n: int) -> int | None:
    i = bisect.bisect_left(buckets, n)
    return buckets[i] if i < len(buckets) else None


@dataclass(frozen=True)
class StepShape:
    """The padded size of one step."""

    num_tokens: int
    num_reqs: int
    num_blocks: int
    """Block-table width."""


@dataclass(frozen=True)
class StepShapes:
    """Sorted buckets per dimension; ``block_table_buckets`` None keeps each step's own width."""

    token_buckets: tuple[int, ...]
    request_buckets: tuple[int, ...]
    block_table_buckets: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("token_buckets", "request_buckets", "block_table_buckets"):
            b = getattr(self, name)
            if b is None:
                continue
            if not b or list(b) != sorted(set(b)) or b[0] < 1:
                raise ValueError(f"StepShapes.{name} must be distinct positive sizes in increasing order, got {b}")

    @classmethod
    def powers_of_two(
        cls, max_num_batched_tokens: int, max_num_seqs: int, max_blocks: int | None = None,
        min_tokens: int = 16, min_reqs: int = 8,
    ) -> StepShapes:
        """vLLM's TPU buckets: tokens 16, 32, ... up to the budget; requests 8, 16, ... up to
        ``max_num_seqs``; block tables (when given) 1, 2, 4, ... up to ``max_blocks``."""
        return cls(
            pow2_buckets(min_tokens, max_num_batched_tokens),
            pow2_buckets(min(min_reqs, max_num_seqs), max_num_seqs),
            None if max_blocks is None else pow2_buckets(1, max_blocks),
        )

    def select(self, num_tokens: int, num_reqs: int, num_blocks: int) -> StepShape | None:
        """The smallest bucket holding the step, or None when it is larger than every bucket."""
        t = _smallest(self.token_buckets, num_tokens)
        r = _smallest(self.request_buckets, num_reqs)
        w = num_blocks if self.block_table_buckets is None else _smallest(self.block_table_buckets, num_blocks)
        if t is None or r is None or w is None:
            return None
        return StepShape(t, r, w)

    @property
    def num_shapes(self) -> int:
        """How many distinct step shapes exist (an upper bound on compiled graphs)."""
        widths = 1 if self.block_table_buckets is None else len(self.block_table_buckets)
        return len(self.token_buckets) * len(self.request_buckets) * widths

    def describe(self) -> str:
        return (
            f"tokens {list(self.token_buckets)}, requests {list(self.request_buckets)}, "
            f"block tables {'as needed' if self.block_table_buckets is None else list(self.block_table_buckets)}"
        )
