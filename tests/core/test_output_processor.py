"""Tests for vllm_core.engine.output_processor: output kinds (cumulative, delta, final only),
n / best_of gathering, logprob dicts, prompt logprobs and the stop-string hold-back, with a
one-character-per-token tokenizer."""

from __future__ import annotations

import pytest

from vllm_core.engine.core_types import EngineCoreOutput
from vllm_core.engine.output_processor import OutputProcessor, fan_out
from vllm_core.logprobs import PositionLogprobs, PromptLogprobsChunk
from vllm_core.outputs import RequestOutput
from vllm_core.sampling_params import RequestOutputKind, SamplingParams

CUMULATIVE, DELTA, FINAL_ONLY = RequestOutputKind.CUMULATIVE, RequestOutputKind.DELTA, RequestOutputKind.FINAL_ONLY


class CharTokenizer:
    """Token id = code point."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True, **_: object) -> str:
        return "".join(chr(i) for i in ids)


def start(params: SamplingParams, prompt: str = "Q") -> OutputProcessor:
    proc = OutputProcessor(CharTokenizer())
    proc.add_request("r", prompt, [ord(c) for c in prompt], fan_out("r", params), params)
    return proc


def pos(token: int, lp: float, rank: int = 1, alts: tuple[tuple[int, float], ...] = ()) -> PositionLogprobs:
    return PositionLogprobs([token, *(t for t, _ in alts)], [lp, *(v for _, v in alts)], rank)


def feed(proc: OutputProcessor, text: str, child: str = "r", finish_last: bool = True) -> list[RequestOutput]:
    results = []
    for i, ch in enumerate(text):
        last = finish_last and i == len(text) - 1
        out = EngineCoreOutput(child, [ord(ch)], "length" if last else None)
        results += proc.process([out])[0]
    return results


def test_cumulative_outputs_grow() -> None:
    outs = feed(start(SamplingParams()), "abc")
    assert [o.outputs[0].text for o in outs] == ["a", "ab", "abc"]
    assert [o.outputs[0].token_ids for o in outs][-1] == [97, 98, 99]
    assert [o.finished for o in outs] == [False, False, True]


def test_delta_outputs_concatenate_to_the_cumulative_result() -> None:
    outs = feed(start(SamplingParams(output_kind=DELTA)), "hello")
    assert [o.outputs[0].text for o in outs] == list("hello")
    assert [o.outputs[0].token_ids for o in outs] == [[ord(c)] for c in "hello"]
    assert outs[-1].finished and outs[-1].outputs[0].finish_reason == "length"


def test_final_only_emits_once() -> None:
    outs = feed(start(SamplingParams(output_kind=FINAL_ONLY)), "hello")
    assert len(outs) == 1 and outs[0].finished and outs[0].outputs[0].text == "hello"


@pytest.mark.parametrize("kind", [CUMULATIVE, DELTA])
def test_text_that_may_start_a_stop_string_is_held_back(kind: RequestOutputKind) -> None:
    """A stream must never show characters that turn out to be part of the stop string."""
    proc = start(SamplingParams(stop=["xyz"], output_kind=kind))
    outs = feed(proc, "abxyq" + "xyz", finish_last=False)
    shown = "".join(o.outputs[0].text for o in outs) if kind is DELTA else outs[-1].outputs[0].text
    assert shown == "abxyq"
    assert outs[-1].finished and outs[-1].outputs[0].stop_reason == "xyz"
    if kind is CUMULATIVE:
        assert [o.outputs[0].text for o in outs] == ["", "", "a", "ab", "abx", "abxy", "abxyq", "abxyq"]


def test_delta_with_n_shows_only_the_samples_that_changed() -> None:
    proc = start(SamplingParams(n=2, output_kind=DELTA))
    first = proc.process([EngineCoreOutput("0_r", [ord("a")])])[0]
    assert [c.index for c in first[0].outputs] == [0]
    both = proc.process([EngineCoreOutput("0_r", [ord("b")], "length"), EngineCoreOutput("1_r", [ord("c")], "length")])[0]
    assert [(c.index, c.text) for c in both[0].outputs] == [(0, "b"), (1, "c")] and both[0].finished


def test_best_of_returns_the_n_best_by_cumulative_logprob_at_the_end() -> None:
    params = SamplingParams(n=2, best_of=4, output_kind=DELTA)
    children = fan_out("r", params)
    assert [c for c, _ in children] == ["0_r", "1_r", "2_r", "3_r"]
    assert all(p.logprobs == 0 and p.n == 1 and p.best_of is None for _, p in children)
    proc = start(params)
    scores = {"0_r": [-1.0, -2.0], "1_r": [-0.5, -0.1], "2_r": [-3.0, -0.1], "3_r": [-0.2, -0.3]}
    results = []
    for step in range(2):
        outs = [EngineCoreOutput(c, [ord("a") + i], "length" if step == 1 else None, new_logprobs=[pos(97 + i, s[step])])
                for i, (c, s) in enumerate(scores.items())]
        results += proc.process(outs)[0]
    assert len(results) == 1 and results[0].finished
    best = results[0].outputs
    assert [c.index for c in best] == [0, 1]
    assert [c.cumulative_logprob for c in best] == pytest.approx([-0.5, -0.6])
    assert [c.text for c in best] == ["dd", "bb"]
    assert all(c.logprobs is None for c in best)  # ranking needed them; the user did not ask


def test_seeds_of_the_samples_follow_the_request_seed() -> None:
    assert [p.seed for _, p in fan_out("r", SamplingParams(n=3, seed=10))] == [10, 11, 12]
    assert [p.seed for _, p in fan_out("r", SamplingParams(n=2))] == [None, None]
    assert fan_out("r", SamplingParams(seed=4)) == [("r", SamplingParams(seed=4))]


def test_logprob_dicts_and_cumulative_logprob() -> None:
    proc = start(SamplingParams(logprobs=2))
    outs = []
    for i, (tok, lp, rank, alts) in enumerate([(97, -0.1, 1, ((97, -0.1), (98, -2.5))),
                                                (120, -4.0, 9, ((99, -0.3), (100, -1.2)))]):
        outs += proc.process([EngineCoreOutput("r", [tok], "length" if i else None,
                                               new_logprobs=[pos(tok, lp, rank, alts)])])[0]
    comp = outs[-1].outputs[0]
    assert comp.cumulative_logprob == pytest.approx(-4.1)
    first, second = comp.logprobs  # type: ignore[misc]
    assert {t: (e.logprob, e.rank, e.decoded_token) for t, e in first.items()} == {
        97: (-0.1, 1, "a"), 98: (-2.5, 2, "b")}
    assert {t: (e.rank, e.decoded_token) for t, e in second.items()} == {120: (9, "x"), 99: (1, "c"), 100: (2, "d")}


def test_prompt_logprobs_are_assembled_from_chunks_and_sent_once_in_delta() -> None:
    proc = start(SamplingParams(prompt_logprobs=1, output_kind=DELTA), prompt="abcd")
    chunk1 = PromptLogprobsChunk(1, [pos(98, -1.0)])
    chunk2 = PromptLogprobsChunk(2, [pos(99, -2.0, 3, ((120, -0.5),)), pos(100, -3.0)])
    assert proc.process([EngineCoreOutput("r", [], new_prompt_logprobs=chunk1)])[0] == []
    first = proc.process([EngineCoreOutput("r", [120], new_prompt_logprobs=chunk2)])[0][0]
    plp = first.prompt_logprobs
    assert plp is not None and plp[0] is None and len(plp) == 4
    assert [next(iter(d)) for d in plp[1:]] == [98, 99, 100]  # type: ignore[union-attr]
    assert plp[2][99].rank == 3 and plp[2][120].rank == 1  # type: ignore[index]
    second = proc.process([EngineCoreOutput("r", [121], "length")])[0][0]
    assert second.prompt_logprobs is None
