"""``SamplingParams``: how one request samples and when it stops (vLLM's meaning for each field)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from vllm_core.errors import SamplingParamsError

_GREEDY_EPS = 1e-5


class SamplingType(Enum):
    GREEDY = "greedy"
    RANDOM = "random"
    RANDOM_SEED = "random_seed"


def _fail(name: str, value: Any, must: str) -> SamplingParamsError:
    return SamplingParamsError(f"SamplingParams.{name} must be {must}, got {value!r}")


@dataclass
class SamplingParams:
    """Sampling and stopping settings of one request.

    Validated on construction: a bad value raises ``SamplingParamsError`` (a ``ValueError``)
    naming the field, the value and the accepted range.
    """

    n: int = 1
    """Number of completions to return for the prompt."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p (0, 1]."""
    top_k: int = 0
    """Keep the k most likely tokens; 0 or -1 disables."""
    min_p: float = 0.0
    """Drop tokens whose probability is below min_p times the top token's [0, 1]."""
    seed: int | None = None
    """Per-request seed: the same seed gives the same tokens whatever else is in the batch."""
    max_tokens: int | None = 16
    """Most tokens to generate; None means up to the model length."""
    min_tokens: int = 0
    """EOS and stop_token_ids are suppressed until this many tokens were generated."""
    stop: str | list[str] | None = None
    """Strings that end generation; the text returned excludes them (see include_stop_str_in_output)."""
    stop_token_ids: list[int] | None = None
    """Token ids that end generation (kept in the output ids)."""
    ignore_eos: bool = False
    """Keep generating after the EOS token."""
    include_stop_str_in_output: bool = False
    """Keep the matched stop string in the returned text."""
    skip_special_tokens: bool = True
    """Leave special tokens out of the returned text."""
    detokenize: bool = True
    """Produce text (token ids are always returned)."""
    _stop_list: list[str] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._validate()
        if isinstance(self.stop, str):
            self._stop_list = [self.stop]
        else:
            self._stop_list = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        if self.top_k == -1:
            self.top_k = 0

    def _validate(self) -> None:
        def is_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        if not is_int(self.n) or self.n < 1:
            raise _fail("n", self.n, "an integer >= 1")
        if not is_num(self.temperature) or self.temperature < 0 or self.temperature != self.temperature:
            raise _fail("temperature", self.temperature, "a number >= 0 (0 means greedy)")
        if not is_num(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise _fail("top_p", self.top_p, "a number in (0, 1]")
        if not is_int(self.top_k) or self.top_k < -1:
            raise _fail("top_k", self.top_k, "an integer >= 1, or 0 / -1 to disable")
        if not is_num(self.min_p) or not 0.0 <= self.min_p <= 1.0:
            raise _fail("min_p", self.min_p, "a number in [0, 1]")
        # The range torch.Generator.manual_seed accepts: a wider seed would fail mid-step.
        if self.seed is not None and (not is_int(self.seed) or not -(2**63) <= self.seed < 2**64):
            raise _fail("seed", self.seed, "an integer in [-2**63, 2**64) or None")
        if self.max_tokens is not None and (not is_int(self.max_tokens) or self.max_tokens < 1):
            raise _fail("max_tokens", self.max_tokens, "an integer >= 1 or None")
        if not is_int(self.min_tokens) or self.min_tokens < 0:
            raise _fail("min_tokens", self.min_tokens, "an integer >= 0")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise _fail(
                "min_tokens", self.min_tokens, f"<= max_tokens ({self.max_tokens})"
            )
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        if stops is not None and (
            not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) and s for s in stops)
        ):
            raise _fail("stop", self.stop, "a non-empty string or a list of non-empty strings")
        ids = self.stop_token_ids
        if ids is not None and (
            not isinstance(ids, (list, tuple)) or not all(is_int(t) and t >= 0 for t in ids)
        ):
            raise _fail("stop_token_ids", ids, "a list of token ids (integers >= 0)")
        for name in ("ignore_eos", "include_stop_str_in_output", "skip_special_tokens", "detokenize"):
            if not isinstance(getattr(self, name), bool):
                raise _fail(name, getattr(self, name), "True or False")

    @property
    def stop_strings(self) -> list[str]:
        """``stop`` as a list."""
        return self._stop_list

    @property
    def sampling_type(self) -> SamplingType:
        if self.temperature < _GREEDY_EPS:
            return SamplingType.GREEDY
        return SamplingType.RANDOM_SEED if self.seed is not None else SamplingType.RANDOM

    @property
    def is_greedy(self) -> bool:
        return self.sampling_type is SamplingType.GREEDY

    def clone(self, **changes: Any) -> SamplingParams:
        """A validated copy with some fields changed."""
        values = {
            k: getattr(self, k) for k in self.__dataclass_fields__ if not k.startswith("_")
        }
        values.update(changes)
        return SamplingParams(**values)
