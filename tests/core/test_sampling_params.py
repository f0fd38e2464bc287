"""Tests for vllm_core.sampling_params: validation, defaults, normalisation, greedy detection."""

from __future__ import annotations

import math
from typing import Any

import pytest

from vllm_core.errors import RequestError, SamplingParamsError
from vllm_core.sampling_params import BeamSearchParams, RequestOutputKind, SamplingParams, SamplingType

BAD_VALUES: list[tuple[str, Any]] = [
    ("n", 0),
    ("n", -1),
    ("n", 1.0),
    ("n", True),
    ("n", "2"),
    ("n", None),
    ("temperature", -0.1),
    ("temperature", -1),
    ("temperature", math.nan),
    ("temperature", "1"),
    ("temperature", None),
    ("temperature", True),
    ("top_p", 0.0),
    ("top_p", -0.5),
    ("top_p", 1.01),
    ("top_p", math.nan),
    ("top_p", "0.5"),
    ("top_p", None),
    ("top_p", False),
    ("top_k", -2),
    ("top_k", 1.5),
    ("top_k", True),
    ("top_k", "5"),
    ("top_k", None),
    ("min_p", -0.01),
    ("min_p", 1.5),
    ("min_p", math.nan),
    ("min_p", "0.1"),
    ("min_p", None),
    ("min_p", True),
    ("seed", 1.5),
    ("seed", "42"),
    ("seed", True),
    ("seed", 2**64),  # torch.Generator.manual_seed would fail inside the engine step
    ("seed", -(2**63) - 1),
    ("max_tokens", 0),
    ("max_tokens", -5),
    ("max_tokens", 2.0),
    ("max_tokens", "16"),
    ("max_tokens", True),
    ("min_tokens", -1),
    ("min_tokens", 1.0),
    ("min_tokens", None),
    ("min_tokens", False),
    ("min_tokens", 17),  # > max_tokens (16)
    ("stop", ""),
    ("stop", [""]),
    ("stop", ["ok", ""]),
    ("stop", 5),
    ("stop", ["ok", 5]),
    ("stop", {"a"}),
    ("stop", b"x"),
    ("stop_token_ids", 5),
    ("stop_token_ids", [-1]),
    ("stop_token_ids", [1, 2.0]),
    ("stop_token_ids", [True]),
    ("stop_token_ids", ["1"]),
    ("stop_token_ids", "1"),
    ("ignore_eos", 1),
    ("ignore_eos", None),
    ("ignore_eos", "yes"),
    ("include_stop_str_in_output", 0),
    ("include_stop_str_in_output", "false"),
    ("skip_special_tokens", 1),
    ("skip_special_tokens", None),
    ("detokenize", 0),
    ("detokenize", "true"),
    ("best_of", 0),
    ("best_of", 1.5),
    ("best_of", True),
    ("presence_penalty", 2.5),
    ("presence_penalty", -2.01),
    ("presence_penalty", math.nan),
    ("presence_penalty", None),
    ("frequency_penalty", -3),
    ("frequency_penalty", "1"),
    ("repetition_penalty", 0),
    ("repetition_penalty", -1.0),
    ("repetition_penalty", math.inf),
    ("repetition_penalty", None),
    ("logprobs", -2),
    ("logprobs", 1.0),
    ("logprobs", True),
    ("prompt_logprobs", -5),
    ("prompt_logprobs", "3"),
    ("spaces_between_special_tokens", 1),
    ("spaces_between_special_tokens", None),
    ("logit_bias", [1, 2]),
    ("logit_bias", {-1: 1.0}),
    ("logit_bias", {"x": 1.0}),
    ("logit_bias", {1: math.nan}),
    ("logit_bias", {1: math.inf}),
    ("logit_bias", {1.5: 1.0}),
    ("logit_bias", {1: "2"}),
    ("allowed_token_ids", []),
    ("allowed_token_ids", [-1]),
    ("allowed_token_ids", 5),
    ("allowed_token_ids", [1, "2"]),
    ("bad_words", "word"),
    ("bad_words", [""]),
    ("bad_words", ["  "]),
    ("bad_words", [3]),
    ("truncate_prompt_tokens", 0),
    ("truncate_prompt_tokens", -2),
    ("truncate_prompt_tokens", 1.0),
    ("output_kind", "delta"),
    ("output_kind", 1),
    ("output_kind", None),
    ("structured_outputs", {"regex": "a"}),
    ("structured_outputs", "json"),
]


def test_every_field_has_bad_values() -> None:
    fields = {k for k in SamplingParams.__dataclass_fields__ if not k.startswith("_")}
    assert fields == {name for name, _ in BAD_VALUES}


@pytest.mark.parametrize(("field", "value"), BAD_VALUES, ids=[f"{f}={v!r}" for f, v in BAD_VALUES])
def test_bad_value_raises_with_field_name(field: str, value: Any) -> None:
    with pytest.raises(SamplingParamsError, match=rf"SamplingParams\.{field}\b") as info:
        SamplingParams(**{field: value})
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, RequestError)


@pytest.mark.parametrize(
    ("field", "value"),
    [("top_p", 2.5), ("max_tokens", 0), ("stop_token_ids", [-7])],
)
def test_error_message_shows_the_value(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=repr(value).replace("[", r"\[").replace("]", r"\]")):
        SamplingParams(**{field: value})


def test_min_tokens_above_max_tokens_names_both() -> None:
    with pytest.raises(SamplingParamsError, match=r"min_tokens.*max_tokens \(4\)"):
        SamplingParams(max_tokens=4, min_tokens=5)


GOOD_VALUES: list[tuple[str, Any]] = [
    ("n", 3),
    ("temperature", 0),
    ("temperature", 0.0),
    ("temperature", 2),
    ("top_p", 1),
    ("top_p", 1e-6),
    ("top_k", -1),
    ("top_k", 0),
    ("top_k", 1),
    ("min_p", 0),
    ("min_p", 1),
    ("seed", 0),
    ("seed", -3),
    ("seed", 2**64 - 1),
    ("seed", -(2**63)),
    ("max_tokens", None),
    ("max_tokens", 1),
    ("min_tokens", 16),
    ("stop", "x"),
    ("stop", ["a", "bc"]),
    ("stop", ("a",)),
    ("stop", []),
    ("stop_token_ids", [0, 5]),
    ("stop_token_ids", (1,)),
    ("stop_token_ids", []),
    ("ignore_eos", True),
    ("best_of", 1),
    ("best_of", None),
    ("presence_penalty", -2),
    ("presence_penalty", 2.0),
    ("frequency_penalty", 0.5),
    ("repetition_penalty", 0.5),
    ("repetition_penalty", 10),
    ("logprobs", 0),
    ("logprobs", -1),
    ("logprobs", 20),
    ("prompt_logprobs", 0),
    ("prompt_logprobs", -1),
    ("spaces_between_special_tokens", False),
    ("logit_bias", {}),
    ("logit_bias", {0: -100, 5: 3.5}),
    ("allowed_token_ids", [0]),
    ("allowed_token_ids", (3, 4)),
    ("bad_words", []),
    ("bad_words", ["hello", "two words"]),
    ("truncate_prompt_tokens", 1),
    ("truncate_prompt_tokens", -1),
    ("output_kind", RequestOutputKind.DELTA),
    ("output_kind", RequestOutputKind.FINAL_ONLY),
]


@pytest.mark.parametrize(("field", "value"), GOOD_VALUES, ids=[f"{f}={v!r}" for f, v in GOOD_VALUES])
def test_good_values_are_accepted(field: str, value: Any) -> None:
    SamplingParams(**{field: value})


def test_min_tokens_may_exceed_default_when_max_tokens_is_none() -> None:
    assert SamplingParams(max_tokens=None, min_tokens=1000).min_tokens == 1000


def test_defaults() -> None:
    p = SamplingParams()
    assert p.n == 1
    assert p.temperature == 1.0
    assert p.top_p == 1.0
    assert p.top_k == 0
    assert p.min_p == 0.0
    assert p.seed is None
    assert p.max_tokens == 16
    assert p.min_tokens == 0
    assert p.stop is None and p.stop_strings == []
    assert p.stop_token_ids == []
    assert p.ignore_eos is False
    assert p.include_stop_str_in_output is False
    assert p.skip_special_tokens is True
    assert p.detokenize is True
    assert p.best_of is None and p.num_sequences == 1
    assert (p.presence_penalty, p.frequency_penalty, p.repetition_penalty) == (0.0, 0.0, 1.0)
    assert not p.has_penalties
    assert p.logprobs is None and p.prompt_logprobs is None
    assert p.spaces_between_special_tokens is True
    assert p.logit_bias is None and p.allowed_token_ids is None and p.bad_words is None
    assert p.truncate_prompt_tokens is None
    assert p.output_kind is RequestOutputKind.CUMULATIVE
    assert p.sampling_type is SamplingType.RANDOM
    assert not p.is_greedy


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"temperature": 0}, SamplingType.GREEDY),
        ({"temperature": 0.0, "seed": 7}, SamplingType.GREEDY),
        ({"temperature": 1e-6}, SamplingType.GREEDY),
        ({"temperature": 1e-3}, SamplingType.RANDOM),
        ({"temperature": 0.7}, SamplingType.RANDOM),
        ({"temperature": 0.7, "seed": 0}, SamplingType.RANDOM_SEED),
        ({"seed": 123}, SamplingType.RANDOM_SEED),
        ({"top_k": 1}, SamplingType.RANDOM),  # top_k=1 samples as greedy but is not flagged as such
    ],
)
def test_sampling_type(kwargs: dict[str, Any], expected: SamplingType) -> None:
    p = SamplingParams(**kwargs)
    assert p.sampling_type is expected
    assert p.is_greedy == (expected is SamplingType.GREEDY)


def test_stop_string_becomes_a_list() -> None:
    p = SamplingParams(stop="###")
    assert p.stop_strings == ["###"]
    assert SamplingParams(stop=["a", "b"]).stop_strings == ["a", "b"]
    assert SamplingParams(stop=("a", "b")).stop_strings == ["a", "b"]
    assert SamplingParams(stop=None).stop_strings == []


def test_stop_list_is_a_copy() -> None:
    stops = ["a"]
    p = SamplingParams(stop=stops)
    stops.append("b")
    assert p.stop_strings == ["a"]


def test_stop_token_ids_normalised_to_a_list() -> None:
    assert SamplingParams(stop_token_ids=None).stop_token_ids == []
    assert SamplingParams(stop_token_ids=(3, 4)).stop_token_ids == [3, 4]


def test_top_k_minus_one_becomes_zero() -> None:
    assert SamplingParams(top_k=-1).top_k == 0
    assert SamplingParams(top_k=0).top_k == 0
    assert SamplingParams(top_k=5).top_k == 5


def test_clone_validates_and_keeps_other_fields() -> None:
    p = SamplingParams(temperature=0.5, stop="x", top_k=-1, seed=3)
    q = p.clone(max_tokens=4)
    assert (q.temperature, q.stop_strings, q.top_k, q.seed, q.max_tokens) == (0.5, ["x"], 0, 3, 4)
    assert p.max_tokens == 16
    with pytest.raises(SamplingParamsError, match="top_p"):
        p.clone(top_p=0)


def test_best_of_below_n_names_n() -> None:
    with pytest.raises(SamplingParamsError, match=r"best_of must be an integer >= n \(3\)"):
        SamplingParams(n=3, best_of=2)
    assert SamplingParams(n=2, best_of=5).num_sequences == 5
    assert SamplingParams(n=2).num_sequences == 2


def test_stop_strings_need_detokenize() -> None:
    with pytest.raises(SamplingParamsError, match="detokenize=False"):
        SamplingParams(stop=["x"], detokenize=False)
    SamplingParams(stop_token_ids=[3], detokenize=False)


def test_logit_bias_keys_become_ints_and_values_are_clamped() -> None:
    p = SamplingParams(logit_bias={"7": 150, 3: -1000.0, 4: 2})
    assert p.logit_bias == {7: 100.0, 3: -100.0, 4: 2.0}


@pytest.mark.parametrize(
    ("kwargs", "penalised"),
    [({"presence_penalty": 0.1}, True), ({"frequency_penalty": -0.1}, True),
     ({"repetition_penalty": 1.1}, True), ({}, False)],
)
def test_has_penalties(kwargs: dict[str, Any], penalised: bool) -> None:
    assert SamplingParams(**kwargs).has_penalties is penalised


def test_clone_keeps_tokenized_bad_words() -> None:
    p = SamplingParams(bad_words=["x"])
    p._bad_words_token_ids = [[5]]
    assert p.clone(max_tokens=3).bad_words_token_ids == [[5]]
    assert p.clone(bad_words=["y"]).bad_words_token_ids is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"beam_width": 0, "max_tokens": 4}, "beam_width"), ({"beam_width": 2, "max_tokens": 0}, "max_tokens"),
     ({"beam_width": 2, "max_tokens": 4, "length_penalty": math.nan}, "length_penalty"),
     ({"beam_width": 2, "max_tokens": 4, "temperature": 0.5}, "temperature")],
)
def test_beam_search_params_validation(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(SamplingParamsError, match=rf"BeamSearchParams\.{field} must be"):
        BeamSearchParams(**kwargs)


def test_exported_from_the_package() -> None:
    import vllm_core

    assert vllm_core.RequestOutputKind is RequestOutputKind
    assert vllm_core.BeamSearchParams is BeamSearchParams
