"""Beam search over the engine, as vLLM's ``LLM.beam_search`` and its server's
``use_beam_search`` do it.

Every step runs each live beam as a one-token request asking for ``2 * beam_width`` logprobs
(raw log-probabilities, greedy), extends every beam by each candidate and keeps the
``beam_width`` best per prompt. Beams of one prompt share their prefix: its full KV blocks are
hits in the prefix cache, so a step recomputes only each beam's last partial block. A beam
that ends in EOS is set aside as completed (unless ``ignore_eos``); at the end the completed
and live beams are ranked by ``cum_logprob / len(tokens) ** length_penalty``.

``BeamSearch`` is the algorithm alone; ``beam_search`` drives it with ``LLM.generate`` and
``beam_search_async`` with ``AsyncLLM`` (the server), so both give the same beams.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vllm_core.errors import RequestError
from vllm_core.logprobs import Logprob
from vllm_core.outputs import CompletionOutput, RequestOutput
from vllm_core.sampling_params import BeamSearchParams, RequestOutputKind, SamplingParams

if TYPE_CHECKING:
    from vllm_core.engine.async_llm import AsyncLLM
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


class BeamSearch:
    """The beam-search state of a batch of prompts, whatever runs the steps.

    Loop: run ``step_params`` on each of ``pending()`` (token-id prompts), hand the outputs in
    the same order to ``advance``, until ``done``; then ``results``.
    """

    def __init__(self, prompts: Sequence[list[int]], params: BeamSearchParams, eos_token_id: int | None,
                 max_logprobs: int) -> None:
        num_candidates = 2 * params.beam_width
        if max_logprobs != -1 and num_candidates > max_logprobs:
            raise RequestError(
                f"beam_width={params.beam_width} needs {num_candidates} logprobs per step but max_logprobs is "
                f"{max_logprobs}; lower beam_width or start the engine with max_logprobs >= {num_candidates}"
            )
        self.params = params
        self.eos = eos_token_id
        self.step_params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=num_candidates, ignore_eos=True,
                                          detokenize=False, output_kind=RequestOutputKind.FINAL_ONLY)
        self.instances = [_Instance([BeamSearchSequence(list(p))]) for p in prompts]
        self.steps = 0
        self._live: list[tuple[_Instance, BeamSearchSequence]] = []

    @property
    def done(self) -> bool:
        return self.steps >= self.params.max_tokens or not any(inst.beams for inst in self.instances)

    def pending(self) -> list[list[int]]:
        """The live beams' tokens: the prompts of the next step."""
        self._live = [(inst, beam) for inst in self.instances for beam in inst.beams]
        return [beam.tokens for _, beam in self._live]

    def pending_prompts(self) -> list[int]:
        """The prompt index of each beam ``pending()`` returned, in the same order."""
        index = {id(inst): i for i, inst in enumerate(self.instances)}
        return [index[id(inst)] for inst, _ in self._live]

    def score(self, beam: BeamSearchSequence) -> float:
        return beam_search_score(beam.tokens, beam.cum_logprob, self.eos, self.params.length_penalty)

    def advance(self, outputs: Sequence[RequestOutput]) -> None:
        """Extend every pending beam by its step's candidates; keep the best per prompt."""
        if len(outputs) != len(self._live):
            raise RuntimeError(f"beam search step got {len(outputs)} outputs for {len(self._live)} beams")
        candidates: dict[int, list[BeamSearchSequence]] = {id(inst): [] for inst in self.instances}
        for (inst, beam), out in zip(self._live, outputs):
            step = out.outputs[0].logprobs
            assert step is not None
            for token, lp in step[0].items():
                new = BeamSearchSequence(beam.tokens + [token], beam.logprobs + [step[0]], beam.cum_logprob + lp.logprob)
                if token == self.eos and not self.params.ignore_eos:
                    new.finish_reason, new.stop_reason = "stop", None
                    inst.completed.append(new)
                else:
                    candidates[id(inst)].append(new)
        for inst in self.instances:
            inst.beams = sorted(candidates[id(inst)], key=self.score, reverse=True)[: self.params.beam_width]
        self.steps += 1

    def results(self, tokenizer: Any) -> list[BeamSearchOutput]:
        """The ``beam_width`` best of the completed and live beams of each prompt, best first."""
        out = []
        for inst in self.instances:
            for beam in inst.beams:
                beam.finish_reason = "length"
            best = sorted(inst.completed + inst.beams, key=self.score, reverse=True)[: self.params.beam_width]
            if tokenizer is not None:
                for beam in best:
                    beam.text = tokenizer.decode(beam.tokens, skip_special_tokens=True)
            out.append(BeamSearchOutput(best))
        return out


def beam_search(
    llm: LLM, prompts: Sequence[PromptType], params: BeamSearchParams, lora_requests: Sequence[Any] | None = None,
) -> list[BeamSearchOutput]:
    """``LLM.beam_search``: the beams of all prompts run together, one ``generate`` per step
    (``lora_requests``: each prompt's adapter or None, used by all its beams)."""
    engine = llm.llm_engine
    search = BeamSearch([engine.input_processor.tokenize(p)[1] for p in prompts], params,
                        engine.input_processor.eos_token_id, engine.config.model.max_logprobs)
    while not search.done:
        batch: list[PromptType] = [{"prompt_token_ids": tokens} for tokens in search.pending()]
        loras = None if lora_requests is None else [lora_requests[i] for i in search.pending_prompts()]
        search.advance(llm.generate(batch, search.step_params, use_tqdm=False, lora_request=loras))
    return search.results(engine.tokenizer)


def beam_search_async(engine: AsyncLLM, prompt: PromptType, params: BeamSearchParams, request_id: str,
                      num_outputs: int | None = None, skip_special_tokens: bool = True,
                      include_stop_str_in_output: bool = False, request_args: dict[str, Any] | None = None,
                      ) -> AsyncIterator[RequestOutput]:
    """Beam search of one prompt over ``AsyncLLM`` (vLLM's ``EngineClient.beam_search``): each step
    sends the live beams as concurrent requests. The iterator yields one finished ``RequestOutput``
    holding the ``num_outputs`` (default ``beam_width``) best beams; leaving it early aborts the
    step in flight. A bad prompt or width raises ``RequestError`` here, before anything runs.
    ``request_args``: plugin request arguments every beam runs with (``{"lora_request": ...}``)."""
    text, prompt_ids = engine.input_processor.tokenize(prompt)
    search = BeamSearch([prompt_ids], params, engine.input_processor.eos_token_id, engine.config.model.max_logprobs)

    async def run() -> AsyncIterator[RequestOutput]:
        while not search.done:
            prompts = search.pending()
            ids = [f"{request_id}-beam{search.steps}-{i}" for i in range(len(prompts))]
            search.advance(await _run_step(engine, prompts, search.step_params, ids, request_args or {}))
        best = search.results(None)[0].sequences[: num_outputs or params.beam_width]
        yield to_request_output(request_id, text, prompt_ids, best, engine.tokenizer, skip_special_tokens,
                                include_stop_str_in_output)

    return run()


async def _run_step(engine: AsyncLLM, prompts: list[list[int]], params: SamplingParams,
                    request_ids: list[str], request_args: dict[str, Any] | None = None) -> list[RequestOutput]:
    """The final output of every prompt, run concurrently; on any exit every request is closed."""
    from vllm_core.engine.async_llm import run_to_completion

    try:
        return await run_to_completion(
            [engine.submit({"prompt_token_ids": tokens}, params, rid, **(request_args or {}))
             for rid, tokens in zip(request_ids, prompts)]
        )
    finally:
        for rid in request_ids:  # a generator cancelled before it started never closes its request
            engine.abort(rid)


def to_request_output(request_id: str, prompt: str | None, prompt_ids: list[int], beams: list[BeamSearchSequence],
                      tokenizer: Any, skip_special_tokens: bool = True,
                      include_stop_str_in_output: bool = False) -> RequestOutput:
    """Beams as the finished ``RequestOutput`` of one request (one ``CompletionOutput`` each, best
    first); a final EOS is shown only with ``include_stop_str_in_output``."""
    outputs = []
    for i, beam in enumerate(beams):
        generated = beam.tokens[len(prompt_ids):]
        if beam.finish_reason == "stop" and not include_stop_str_in_output:
            generated = generated[:-1]
        text = "" if tokenizer is None else tokenizer.decode(generated, skip_special_tokens=skip_special_tokens)
        outputs.append(CompletionOutput(i, text, generated, beam.finish_reason or "length", beam.stop_reason,
                                        beam.cum_logprob, beam.logprobs[: len(generated)]))
    return RequestOutput(request_id, prompt, prompt_ids, outputs, finished=True)
