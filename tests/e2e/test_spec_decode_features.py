"""Speculative decoding with every per-request feature, several tokens per step: structured
outputs (JSON schema samples validate; greedy output equals the run without speculation),
logprobs of kept tokens, penalties, bad words, ``min_tokens``, stop strings and ``max_tokens``.
A tiny random-weight model with the real SmolLM2 tokenizer; its greedy text loops, so n-gram
drafts are often right, and the target drafting for itself is right wherever no processor
changes its argmax."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.spec_decode_helpers import assert_all_blocks_free, spec_of
from tests.e2e.test_structured import SCHEMA
from vllm_core import LLM, SamplingParams, StructuredOutputsParams

xgr = pytest.importorskip("xgrammar")
jsonschema = pytest.importorskip("jsonschema")

PROMPTS = ["A person:", "The list of fruits is apples, pears, apples, pears,", "Once upon a time"]


SPECS = {
    "none": None,
    "ngram": {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 1, "prompt_lookup_max": 3},
    "self": {"method": "draft_model", "model": "<target>", "num_speculative_tokens": 4},
}


@pytest.fixture(scope="module")
def engines(smol_vocab_model: str) -> dict[str, LLM]:
    path = smol_vocab_model
    out = {}
    for name, spec in SPECS.items():
        if spec is not None and spec.get("model") == "<target>":
            spec = {**spec, "model": path}
        out[name] = LLM(path, dtype="float32", max_model_len=512, num_gpu_blocks_override=256, block_size=16,
                        speculative_config=spec, use_tqdm_on_load=False)
    return out


FEATURES: dict[str, dict[str, Any]] = {
    "json_schema": {"structured_outputs": StructuredOutputsParams(json=SCHEMA, disable_any_whitespace=True),
                    "max_tokens": 120},
    "logprobs": {"logprobs": 3, "max_tokens": 40, "ignore_eos": True},
    "penalties": {"repetition_penalty": 1.3, "frequency_penalty": 0.4, "presence_penalty": 0.2, "max_tokens": 40,
                  "ignore_eos": True},
    "bad_words_min_tokens": {"bad_words": ["apples", " pears"], "min_tokens": 12, "max_tokens": 30},
    "stop_string": {"stop": [" the"], "max_tokens": 60, "ignore_eos": True},
    "max_tokens": {"max_tokens": 7, "ignore_eos": True},
}


@pytest.mark.parametrize("feature", list(FEATURES))
@pytest.mark.parametrize("name", ["ngram", "self"])
def test_greedy_output_with_features_equals_no_speculation(engines: dict[str, LLM], name: str, feature: str) -> None:
    params = SamplingParams(temperature=0.0, **FEATURES[feature])
    want = engines["none"].generate(PROMPTS, params, use_tqdm=False)
    before = spec_of(engines[name]).num_draft_tokens
    got = engines[name].generate(PROMPTS, params, use_tqdm=False)
    for w, g in zip(want, got):
        a, b = w.outputs[0], g.outputs[0]
        assert (b.token_ids, b.text, b.finish_reason, b.stop_reason) == (a.token_ids, a.text, a.finish_reason, a.stop_reason)
        if feature == "logprobs":
            assert b.logprobs is not None and a.logprobs is not None and len(b.logprobs) == len(a.logprobs)
            for pa, pb in zip(a.logprobs, b.logprobs):
                assert pa.keys() == pb.keys()
                for t in pa:
                    assert pb[t].rank == pa[t].rank and pb[t].logprob == pytest.approx(pa[t].logprob, abs=1e-4)
            assert b.cumulative_logprob == pytest.approx(a.cumulative_logprob, abs=1e-3)
        if feature == "json_schema" and b.finish_reason == "stop":
            jsonschema.validate(json.loads(b.text, strict=False), SCHEMA)
        if feature == "max_tokens":
            assert len(b.token_ids) == 7
    # (the draft model drafts its raw argmax: penalties, masks and bans make some drafts wrong)
    assert spec_of(engines[name]).num_draft_tokens > before, "no drafts were verified"
    assert_all_blocks_free(engines[name])


@pytest.mark.parametrize("name", ["ngram", "self"])
def test_sampled_json_schema_outputs_validate(engines: dict[str, LLM], name: str) -> None:
    params = SamplingParams(n=12, temperature=1.0, seed=0, max_tokens=200,
                            structured_outputs=StructuredOutputsParams(json=SCHEMA, disable_any_whitespace=True))
    before = spec_of(engines[name]).num_draft_tokens
    outs = engines[name].generate("A person:", params, use_tqdm=False)[0].outputs
    for c in outs:
        assert c.finish_reason == "stop", c.text
        jsonschema.validate(json.loads(c.text, strict=False), SCHEMA)
    assert len({c.text for c in outs}) > 8
    assert spec_of(engines[name]).num_draft_tokens > before
    assert_all_blocks_free(engines[name])
