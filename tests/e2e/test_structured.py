"""Structured outputs (xgrammar) end to end: a tiny random-weight model with the real SmolLM2
tokenizer samples freely, so only the constraint makes its outputs valid."""

from __future__ import annotations

import json
import re

import pytest

from vllm_core import LLM, SamplingParams, StructuredOutputsParams
from vllm_core.errors import RequestError

xgr = pytest.importorskip("xgrammar")
jsonschema = pytest.importorskip("jsonschema")

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "role": {"enum": ["admin", "user", "guest"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 8}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "role", "age", "tags", "address"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def llm(smol_vocab_model: str) -> LLM:
    return LLM(smol_vocab_model, dtype="float32", max_model_len=512, num_gpu_blocks_override=512, block_size=16,
               use_tqdm_on_load=False)


def constrained(n: int = 1, seed: int = 0, max_tokens: int = 200, **constraint) -> SamplingParams:  # type: ignore[no-untyped-def]
    return SamplingParams(n=n, temperature=1.0, seed=seed, max_tokens=max_tokens,
                          structured_outputs=StructuredOutputsParams(**constraint))


def test_fifty_json_samples_validate(llm: LLM) -> None:
    params = constrained(n=50, json=SCHEMA, disable_any_whitespace=True)
    outs = llm.generate("A person:", params, use_tqdm=False)[0].outputs
    assert len(outs) == 50
    for c in outs:
        assert c.finish_reason == "stop", c.text
        # strict=False: xgrammar's JSON strings admit raw control characters (\x1a), which the
        # random model does produce; json.loads rejects them by default.
        jsonschema.validate(json.loads(c.text, strict=False), SCHEMA)
    assert len({c.text for c in outs}) > 40  # really sampled


def test_regex_choice_grammar_and_json_object(llm: LLM) -> None:
    pattern = r"(cat|dog)-[0-9]{2,4}"
    grammar = 'root ::= "(" num " + " num ")"\nnum ::= [1-9] [0-9]?'
    prompts = ["x"] * 4
    params = [constrained(n=10, regex=pattern), constrained(n=10, seed=1, choice=["yes", "no", "maybe so"]),
              constrained(n=10, seed=2, grammar=grammar), constrained(n=5, seed=3, json_object=True, max_tokens=300)]
    regex, choice, gram, obj = llm.generate(prompts, params, use_tqdm=False)
    assert all(re.fullmatch(pattern, c.text) for c in regex.outputs)
    assert {c.text for c in choice.outputs} <= {"yes", "no", "maybe so"} and len({c.text for c in choice.outputs}) > 1
    assert all(re.fullmatch(r"\([1-9][0-9]? \+ [1-9][0-9]?\)", c.text) for c in gram.outputs)
    finished = [c for c in obj.outputs if c.finish_reason == "stop"]
    assert all(isinstance(json.loads(c.text, strict=False), dict) for c in finished)


def test_unconstrained_requests_in_the_same_batch_are_unaffected(llm: LLM) -> None:
    plain = SamplingParams(temperature=0.8, seed=7, max_tokens=20, ignore_eos=True)
    alone = llm.generate("Hello", plain, use_tqdm=False)[0].outputs[0].token_ids
    mixed = llm.generate(["Hello", "x", "y"], [plain, constrained(n=3, json=SCHEMA), constrained(regex="[a-z]{5}")],
                         use_tqdm=False)
    assert mixed[0].outputs[0].token_ids == alone
    assert re.fullmatch("[a-z]{5}", mixed[2].outputs[0].text)


@pytest.mark.parametrize(
    ("constraint", "match"),
    [
        ({"regex": "[^\\s\\S]"}, "admits no output"),
        ({"regex": "(unclosed"}, r"invalid structured output constraint \(regex\)"),
        ({"json": {"type": "string", "minLength": 5, "maxLength": 2}}, "minLength 5 is greater than maxLength 2"),
        ({"json": '{"type": "object", "properties": '}, r"invalid structured output constraint \(json\)"),
        ({"grammar": "root ::= "}, r"invalid structured output constraint \(grammar\)"),
    ],
)
def test_impossible_or_broken_constraints_fail_at_once(llm: LLM, constraint: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(RequestError, match=match):
        llm.generate("x", constrained(**constraint), use_tqdm=False)
    assert not llm.llm_engine.has_unfinished_requests()


def test_structured_outputs_params_validation() -> None:
    from vllm_core.errors import SamplingParamsError

    with pytest.raises(SamplingParamsError, match="exactly one of"):
        StructuredOutputsParams()
    with pytest.raises(SamplingParamsError, match="exactly one of"):
        StructuredOutputsParams(regex="a", choice=["a"])
    with pytest.raises(SamplingParamsError, match="choice must be a list of non-empty strings"):
        StructuredOutputsParams(choice=["a", ""])
    with pytest.raises(SamplingParamsError, match="structured_outputs must be"):
        SamplingParams(structured_outputs={"regex": "a"})  # type: ignore[arg-type]
