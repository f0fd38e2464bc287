"""Beam search over the engine, as vLLM's ``LLM.beam_search`` does it.

Every step runs each live beam as a one-token request asking for ``2 * beam_width`` logprobs
(raw log-probabilities, greedy), extends every beam by each candidate and keeps the
``beam_width`` best per prompt. Beams of one prompt share their prefix: its full KV blocks are
hits in the prefix cache, so a step recomputes only each beam's last partial block. A beam
that ends in EOS is set aside as completed (unless ``ignore_eos``); at the end the completed
and live beams are ranked by ``cum_logprob / len(tokens) ** length_penalty``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vllm_core.errors import RequestError
from vllm_core.logprobs import Logprob
from vllm_core.sampling_params import BeamSearchParams, SamplingParams

if TYPE_CHECKING:
    from vllm_core.engine.input_processor import PromptType
    from vllm_core.entrypoints.llm import LLM


@dataclass
class BeamSearchSequence:
    """One beam: the prompt and the tokens it generated (vLLM's shape)."""

    tokens: list[int]
    """Prompt tokens followed by the generated ones."""
    logprobs: list[dict[int, Logprob]] = field(default_factory=list)
    """Per generated token: the candidates of that step."""
    cum_logprob: float = 0.0
    text: str | None = None
    """The decoded ``tokens`` (prompt included, as in vLLM); None without a tokenizer."""
    finish_reason: str | None = None
    """``stop`` for a beam that produced EOS, ``length`` otherwise."""
    stop_reason: int | None = None


@dataclass
class BeamSearchOutput:
    """The best ``beam_width`` beams of one prompt, best first."""

    sequences: list[BeamSearchSequence]


def beam_search_score(tokens: Sequence[int], cum_logprob: float, eos_token_id: int | None,
                      length_penalty: float) -> float:
    """vLLM's ranking: cumulative logprob over length ** length_penalty (a final EOS not counted)."""
    length = len(tokens)
    if tokens and tokens[-1] == eos_token_id:
        length -= 1
    return cum_logprob / (length**length_penalty)


@dataclass
class _Instance:
    beams: list[BeamSearchSequence]
    completed: list[BeamSearchSequence] = field(default_factory=list)


def beam_search(llm: LLM, prompts: Sequence[PromptType], params: BeamSearchParams) -> list[BeamSearchOutput]:
    engine = llm.llm_engine
    max_logprobs = engine.config.model.max_logprobs
    num_candidates = 2 * params.beam_width
    if max_logprobs != -1 and num_candidates > max_logprobs:
        raise RequestError(
            f"beam_width={params.beam_width} needs {num_candidates} logprobs per step but max_logprobs is "
            f"{max_logprobs}; lower beam_width or start the engine with max_logprobs >= {num_candidates}"
        )
    eos = engine.input_processor.eos_token_id
    step_params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=num_candidates, ignore_eos=True,
                                 detokenize=False)

    def score(beam: BeamSearchSequence) -> float:
        return beam_search_score(beam.tokens, beam.cum_logprob, eos, params.length_penalty)

    instances = [_Instance([BeamSearchSequence(engine.input_processor.tokenize(p)[1])]) for p in prompts]
    for _ in range(params.max_tokens):
        live = [(inst, beam) for inst in instances for beam in inst.beams]
        if not live:
            break
        outs = llm.generate([{"prompt_token_ids": beam.tokens} for _, beam in live], step_params, use_tqdm=False)
        candidates: dict[int, list[BeamSearchSequence]] = {id(inst): [] for inst in instances}
        for (inst, beam), out in zip(live, outs):
            step = out.outputs[0].logprobs
            assert step is not None
            for token, lp in step[0].items():
                new = BeamSearchSequence(beam.tokens + [token], beam.logprobs + [step[0]], beam.cum_logprob + lp.logprob)
                if token == eos and not params.ignore_eos:
                    new.finish_reason, new.stop_reason = "stop", None
                    inst.completed.append(new)
                else:
                    candidates[id(inst)].append(new)
        for inst in instances:
            inst.beams = sorted(candidates[id(inst)], key=score, reverse=True)[: params.beam_width]
    tokenizer: Any = engine.tokenizer
    results = []
    for inst in instances:
        for beam in inst.beams:
            beam.finish_reason = "length"
        best = sorted(inst.completed + inst.beams, key=score, reverse=True)[: params.beam_width]
        if tokenizer is not None:
            for beam in best:
                beam.text = tokenizer.decode(beam.tokens, skip_special_tokens=True)
        results.append(BeamSearchOutput(best))
    return results
