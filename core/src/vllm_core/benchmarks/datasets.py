"""Benchmark workloads: random token-id prompts of random lengths (vLLM's ``--dataset random``)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class SampleRequest:
    """One benchmark request: the prompt's token ids and how many tokens to generate."""

    prompt_token_ids: list[int]
    expected_output_len: int

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_token_ids)


def length_range(length: int, range_ratio: float) -> tuple[int, int]:
    """vLLM's ``--random-range-ratio``: lengths uniform in ``[len*(1-r), len*(1+r)]`` (at least 1)."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if not 0.0 <= range_ratio < 1.0:
        raise ValueError(f"random range ratio must be in [0, 1), got {range_ratio}")
    return max(1, int(length * (1 - range_ratio))), max(1, int(length * (1 + range_ratio)))


def check_range(name: str, lo_hi: tuple[int, int]) -> tuple[int, int]:
    """Validate an explicit ``LO HI`` length range (inclusive, 1 <= LO <= HI)."""
    lo, hi = lo_hi
    if not 1 <= lo <= hi:
        raise ValueError(f"{name} must satisfy 1 <= LO <= HI, got LO={lo} HI={hi}")
    return lo, hi


@dataclass(frozen=True)
class RandomDataset:
    """Prompts of uniformly random token ids whose lengths are uniform in inclusive ranges.

    Token ids are drawn from ``[0, vocab_size)``; requests run with ``ignore_eos`` so a
    sampled EOS never shortens the output. The same seed gives the same requests.
    """

    input_len_range: tuple[int, int]
    output_len_range: tuple[int, int]
    seed: int = 0

    def sample(self, num_requests: int, vocab_size: int) -> list[SampleRequest]:
        """``num_requests`` requests over a vocabulary of ``vocab_size`` ids."""
        if num_requests < 1:
            raise ValueError(f"num_requests must be >= 1, got {num_requests}")
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        check_range("input_len_range", self.input_len_range)
        check_range("output_len_range", self.output_len_range)
        rng = random.Random(self.seed)
        vocab = range(vocab_size)
        out = []
        for _ in range(num_requests):
            prompt_len = rng.randint(*self.input_len_range)
            output_len = rng.randint(*self.output_len_range)
            out.append(SampleRequest(rng.choices(vocab, k=prompt_len), output_len))
        return out

    @property
    def max_seq_len(self) -> int:
        """The longest prompt plus output this dataset can produce."""
        return self.input_len_range[1] + self.output_len_range[1]
