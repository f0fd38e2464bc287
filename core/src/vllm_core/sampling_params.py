"""``SamplingParams``: how one request samples and when it stops (vLLM's meaning for each field).

``BeamSearchParams`` configures ``LLM.beam_search``; ``RequestOutputKind`` says what a streamed
``RequestOutput`` holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from vllm_core.errors import SamplingParamsError

_GREEDY_EPS = 1e-5
_MAX_LOGIT_BIAS = 100.0


class SamplingType(Enum):
    GREEDY = "greedy"
    RANDOM = "random"
    RANDOM_SEED = "random_seed"


class RequestOutputKind(Enum):
    """What each ``RequestOutput`` of a request carries (vLLM's names)."""

    CUMULATIVE = "cumulative"
    """Everything generated so far (text, token ids, logprobs)."""
    DELTA = "delta"
    """Only what is new since the previous output (streaming clients)."""
    FINAL_ONLY = "final_only"
    """Nothing until the request finishes, then everything."""


@dataclass
class StructuredOutputsParams:
    """A constraint the output must satisfy (vLLM's ``StructuredOutputsParams``): exactly one of
    ``json`` (a JSON schema), ``regex``, ``choice``, ``grammar`` (EBNF) or ``json_object``.
    Enforced with xgrammar token bitmasks (``pip install xgrammar``)."""

    json: str | dict[str, Any] | None = None
    """A JSON schema, as a dict or its JSON text."""
    regex: str | None = None
    choice: list[str] | None = None
    """The output is exactly one of these strings."""
    grammar: str | None = None
    """An EBNF grammar (xgrammar / GBNF syntax) with a ``root`` rule."""
    json_object: bool | None = None
    """Any JSON object (OpenAI's ``response_format={"type": "json_object"}``)."""
    disable_any_whitespace: bool = False
    """JSON without optional whitespace between tokens."""

    def __post_init__(self) -> None:
        given = [k for k in ("json", "regex", "choice", "grammar", "json_object") if getattr(self, k)]
        if len(given) != 1:
            raise SamplingParamsError(
                "StructuredOutputsParams needs exactly one of json, regex, choice, grammar, json_object; "
                f"got {given or 'none'}"
            )
        if self.json is not None and not isinstance(self.json, (str, dict)):
            raise SamplingParamsError(f"StructuredOutputsParams.json must be a dict or a JSON string, got {self.json!r}")
        for name in ("regex", "grammar"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise SamplingParamsError(f"StructuredOutputsParams.{name} must be a string, got {value!r}")
        if self.choice is not None and (
            not isinstance(self.choice, (list, tuple)) or not all(isinstance(c, str) and c for c in self.choice)
        ):
            raise SamplingParamsError(
                f"StructuredOutputsParams.choice must be a list of non-empty strings, got {self.choice!r}"
            )

    def key(self) -> tuple[str, str]:
        """(kind, spec text): what a compiled grammar is cached under."""
        import json as _json

        if self.json is not None:
            spec = self.json if isinstance(self.json, str) else _json.dumps(self.json, sort_keys=True)
            return ("json", spec + ("|compact" if self.disable_any_whitespace else ""))
        if self.regex is not None:
            return ("regex", self.regex)
        if self.choice is not None:
            return ("choice", _json.dumps(list(self.choice)))
        if self.grammar is not None:
            return ("grammar", self.grammar)
        return ("json_object", "")


def _fail(name: str, value: Any, must: str) -> SamplingParamsError:
    return SamplingParamsError(f"SamplingParams.{name} must be {must}, got {value!r}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)


def _is_token_list(v: Any, non_empty: bool = False) -> bool:
    return isinstance(v, (list, tuple)) and (bool(v) or not non_empty) and all(_is_int(t) and t >= 0 for t in v)


@dataclass
class SamplingParams:
    """Sampling and stopping settings of one request.

    Validated on construction: a bad value raises ``SamplingParamsError`` (a ``ValueError``)
    naming the field, the value and the accepted range. Token ids are checked against the
    model's vocabulary when the request is admitted (``RequestError``).
    """

    n: int = 1
    """Number of completions to return for the prompt."""
    best_of: int | None = None
    """Completions generated (>= n); the n with the highest cumulative logprob are returned."""
    presence_penalty: float = 0.0
    """Subtracted once from the logit of every token already generated [-2, 2]."""
    frequency_penalty: float = 0.0
    """Subtracted from a token's logit per time it was generated [-2, 2]."""
    repetition_penalty: float = 1.0
    """> 0; tokens of the prompt or output get logit / penalty (logit * penalty when negative)."""
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
    logprobs: int | None = None
    """Per generated token: its logprob plus the top ``logprobs`` alternatives (-1: the whole
    vocabulary); None returns none."""
    prompt_logprobs: int | None = None
    """Per prompt token: its logprob plus the top ``prompt_logprobs`` alternatives."""
    detokenize: bool = True
    """Produce text (token ids are always returned)."""
    skip_special_tokens: bool = True
    """Leave special tokens out of the returned text."""
    spaces_between_special_tokens: bool = True
    """Put spaces between special tokens in the text (tokenizers that distinguish it)."""
    logit_bias: dict[int, float] | None = None
    """Token id -> value added to its logit, clamped to [-100, 100] as OpenAI does."""
    allowed_token_ids: list[int] | None = None
    """Only these tokens may be generated."""
    bad_words: list[str] | None = None
    """Words never generated: a word's last token is banned whenever the output ends with the
    word's other tokens (with and without a leading space)."""
    truncate_prompt_tokens: int | None = None
    """Keep only the last k prompt tokens; -1 keeps as many as the model length allows."""
    output_kind: RequestOutputKind = RequestOutputKind.CUMULATIVE
    """What each streamed ``RequestOutput`` holds."""
    structured_outputs: StructuredOutputsParams | None = None
    """A JSON schema / regex / choice / grammar constraint on the output."""
    _stop_list: list[str] = field(default_factory=list, init=False, repr=False)
    _bad_words_token_ids: list[list[int]] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._validate()
        if isinstance(self.stop, str):
            self._stop_list = [self.stop]
        else:
            self._stop_list = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        if self.top_k == -1:
            self.top_k = 0
        if self.logit_bias is not None:
            self.logit_bias = {
                int(t): min(_MAX_LOGIT_BIAS, max(-_MAX_LOGIT_BIAS, float(b))) for t, b in self.logit_bias.items()
            }
        if self.allowed_token_ids is not None:
            self.allowed_token_ids = list(self.allowed_token_ids)
        if self.bad_words is not None:
            self.bad_words = list(self.bad_words)

    def _validate(self) -> None:
        self._validate_sampling()
        self._validate_stopping()
        self._validate_outputs()
        self._validate_token_controls()

    def _validate_sampling(self) -> None:
        if not _is_int(self.n) or self.n < 1:
            raise _fail("n", self.n, "an integer >= 1")
        if self.best_of is not None and (not _is_int(self.best_of) or self.best_of < self.n):
            raise _fail("best_of", self.best_of, f"an integer >= n ({self.n}) or None")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            if not _is_num(value) or not -2.0 <= value <= 2.0:
                raise _fail(name, value, "a number in [-2, 2]")
        if not _is_num(self.repetition_penalty) or not 0 < self.repetition_penalty < math.inf:
            raise _fail("repetition_penalty", self.repetition_penalty, "a number > 0 (1 disables)")
        if not _is_num(self.temperature) or self.temperature < 0 or self.temperature == math.inf:
            raise _fail("temperature", self.temperature, "a number >= 0 (0 means greedy)")
        if not _is_num(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise _fail("top_p", self.top_p, "a number in (0, 1]")
        if not _is_int(self.top_k) or self.top_k < -1:
            raise _fail("top_k", self.top_k, "an integer >= 1, or 0 / -1 to disable")
        if not _is_num(self.min_p) or not 0.0 <= self.min_p <= 1.0:
            raise _fail("min_p", self.min_p, "a number in [0, 1]")
        # The range torch.Generator.manual_seed accepts: a wider seed would fail mid-step.
        if self.seed is not None and (not _is_int(self.seed) or not -(2**63) <= self.seed < 2**64):
            raise _fail("seed", self.seed, "an integer in [-2**63, 2**64) or None")

    def _validate_stopping(self) -> None:
        if self.max_tokens is not None and (not _is_int(self.max_tokens) or self.max_tokens < 1):
            raise _fail("max_tokens", self.max_tokens, "an integer >= 1 or None")
        if not _is_int(self.min_tokens) or self.min_tokens < 0:
            raise _fail("min_tokens", self.min_tokens, "an integer >= 0")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            raise _fail("min_tokens", self.min_tokens, f"<= max_tokens ({self.max_tokens})")
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        if stops is not None and (
            not isinstance(stops, (list, tuple)) or not all(isinstance(s, str) and s for s in stops)
        ):
            raise _fail("stop", self.stop, "a non-empty string or a list of non-empty strings")
        if self.stop_token_ids is not None and not _is_token_list(self.stop_token_ids):
            raise _fail("stop_token_ids", self.stop_token_ids, "a list of token ids (integers >= 0)")

    def _validate_outputs(self) -> None:
        for name in (
            "ignore_eos", "include_stop_str_in_output", "skip_special_tokens", "detokenize",
            "spaces_between_special_tokens",
        ):
            if not isinstance(getattr(self, name), bool):
                raise _fail(name, getattr(self, name), "True or False")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < -1):
                raise _fail(name, value, "an integer >= 0, -1 for the whole vocabulary, or None")
        if self.stop and not self.detokenize:
            raise _fail("stop", self.stop, "empty when detokenize=False (stop strings are matched in the text)")
        if not isinstance(self.output_kind, RequestOutputKind):
            raise _fail("output_kind", self.output_kind, "a RequestOutputKind (CUMULATIVE, DELTA or FINAL_ONLY)")
        so = self.structured_outputs
        if so is not None and not isinstance(so, StructuredOutputsParams):
            raise _fail("structured_outputs", so, "a StructuredOutputsParams or None")
        t = self.truncate_prompt_tokens
        if t is not None and (not _is_int(t) or (t < 1 and t != -1)):
            raise _fail("truncate_prompt_tokens", t, "an integer >= 1, -1 (the model length) or None")

    def _validate_token_controls(self) -> None:
        bias = self.logit_bias
        if bias is not None:
            if not isinstance(bias, dict):
                raise _fail("logit_bias", bias, "a dict of token id -> bias")
            for tok, b in bias.items():
                if not _token_key(tok) or not _is_num(b) or not math.isfinite(b):
                    raise _fail("logit_bias", bias, "a dict of token id (int >= 0) -> finite number")
        if self.allowed_token_ids is not None and not _is_token_list(self.allowed_token_ids, non_empty=True):
            raise _fail("allowed_token_ids", self.allowed_token_ids, "a non-empty list of token ids or None")
        words = self.bad_words
        if words is not None and (
            not isinstance(words, (list, tuple)) or not all(isinstance(w, str) and w.strip() for w in words)
        ):
            raise _fail("bad_words", words, "a list of non-blank strings or None")

    @property
    def stop_strings(self) -> list[str]:
        """``stop`` as a list."""
        return self._stop_list

    @property
    def bad_words_token_ids(self) -> list[list[int]] | None:
        """``bad_words`` as token id sequences (set at admission, where the tokenizer is known)."""
        return self._bad_words_token_ids

    @property
    def sampling_type(self) -> SamplingType:
        if self.temperature < _GREEDY_EPS:
            return SamplingType.GREEDY
        return SamplingType.RANDOM_SEED if self.seed is not None else SamplingType.RANDOM

    @property
    def is_greedy(self) -> bool:
        return self.sampling_type is SamplingType.GREEDY

    @property
    def num_sequences(self) -> int:
        """Sequences generated for the request: ``best_of`` when set, else ``n``."""
        return self.best_of if self.best_of is not None else self.n

    @property
    def has_penalties(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0 or self.repetition_penalty != 1.0

    def clone(self, **changes: Any) -> SamplingParams:
        """A validated copy with some fields changed (tokenized bad words carried over)."""
        values = {k: getattr(self, k) for k in self.__dataclass_fields__ if not k.startswith("_")}
        values.update(changes)
        copy = SamplingParams(**values)
        if "bad_words" not in changes:
            copy._bad_words_token_ids = self._bad_words_token_ids
        return copy


def _token_key(tok: Any) -> bool:
    """A logit_bias key: a token id, or its decimal string (JSON object keys are strings)."""
    if isinstance(tok, str):
        return tok.isdigit()
    return _is_int(tok) and tok >= 0


@dataclass
class BeamSearchParams:
    """Settings of ``LLM.beam_search`` (vLLM's names and meanings)."""

    beam_width: int
    """Beams kept at every step (and sequences returned)."""
    max_tokens: int
    """Tokens generated per beam at most."""
    ignore_eos: bool = False
    """Keep extending beams past EOS."""
    temperature: float = 0.0
    """Only 0 is supported: beams are ranked on the model's raw log-probabilities."""
    length_penalty: float = 1.0
    """Final score = cumulative logprob / (length ** length_penalty)."""
    include_stop_str_in_output: bool = False

    def __post_init__(self) -> None:
        if not _is_int(self.beam_width) or self.beam_width < 1:
            raise SamplingParamsError(f"BeamSearchParams.beam_width must be an integer >= 1, got {self.beam_width!r}")
        if not _is_int(self.max_tokens) or self.max_tokens < 1:
            raise SamplingParamsError(f"BeamSearchParams.max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if not _is_num(self.length_penalty) or not math.isfinite(self.length_penalty):
            raise SamplingParamsError(
                f"BeamSearchParams.length_penalty must be a finite number, got {self.length_penalty!r}"
            )
        if self.temperature != 0.0:
            raise SamplingParamsError(
                f"BeamSearchParams.temperature must be 0 (beams follow raw logprobs), got {self.temperature!r}"
            )
