"""``LLM.beam_search`` against ``transformers``' ``num_beams`` generate on tiny float32 models,
the ranking rule, EOS handling and the prefix cache sharing beam prefixes."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import random_prompts
from vllm_core import LLM, BeamSearchParams
from vllm_core.beam_search import beam_search_score
from vllm_core.errors import RequestError


def make_llm(tiny_models, arch: str = "llama", **kwargs) -> LLM:  # type: ignore[no-untyped-def]
    path, _ = tiny_models[arch]
    args = dict(dtype="float32", max_model_len=128, skip_tokenizer_init=True, num_gpu_blocks_override=128,
                block_size=8, use_tqdm_on_load=False)
    args.update(kwargs)
    return LLM(path, **args)


def hf_beams(model, prompt: list[int], beam_width: int, max_new_tokens: int) -> list[list[int]]:  # type: ignore[no-untyped-def]
    from transformers import GenerationConfig

    gc = GenerationConfig(max_new_tokens=max_new_tokens, num_beams=beam_width, num_return_sequences=beam_width,
                          do_sample=False, eos_token_id=None, pad_token_id=0, length_penalty=1.0)
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None
    try:
        with torch.no_grad():
            x = torch.tensor([prompt])
            out = model.generate(x, attention_mask=torch.ones_like(x), generation_config=gc)
    finally:
        model.generation_config.eos_token_id = saved
    return [row[len(prompt):] for row in out.tolist()]


@pytest.mark.parametrize(("arch", "beam_width"), [("llama", 2), ("llama", 4), ("qwen3", 3)])
def test_same_beams_as_transformers(tiny_models, arch: str, beam_width: int) -> None:  # type: ignore[no-untyped-def]
    _, hf = tiny_models[arch]
    llm = make_llm(tiny_models, arch)
    prompts = random_prompts(3, 4, 20, 512, seed=41)
    outs = llm.beam_search([{"prompt_token_ids": p} for p in prompts],
                           BeamSearchParams(beam_width=beam_width, max_tokens=8, ignore_eos=True))
    for prompt, out in zip(prompts, outs):
        ours = [seq.tokens[len(prompt):] for seq in out.sequences]
        assert ours == hf_beams(hf, prompt, beam_width, 8)
        assert all(seq.tokens[: len(prompt)] == prompt and len(seq.logprobs) == 8 for seq in out.sequences)
        scores = [s.cum_logprob for s in out.sequences]
        assert scores == sorted(scores, reverse=True)
        best = out.sequences[0]
        assert best.cum_logprob == pytest.approx(sum(d[t].logprob for d, t in zip(best.logprobs, ours[0])), abs=1e-4)
    stats = llm.llm_engine.core.kv_cache_manager
    assert stats.prefix_hits > 0  # later steps reuse the beams' shared prefix blocks


def test_width_one_is_greedy(tiny_models) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import hf_greedy

    _, hf = tiny_models["llama"]
    llm = make_llm(tiny_models)
    prompt = random_prompts(1, 10, 10, 512, seed=42)[0]
    out = llm.beam_search({"prompt_token_ids": prompt}, BeamSearchParams(beam_width=1, max_tokens=6, ignore_eos=True))
    assert out[0].sequences[0].tokens[len(prompt):] == hf_greedy(hf, prompt, 6)


def test_eos_completes_a_beam_and_length_penalty_ranks(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """Make a frequent token the EOS: beams ending in it are completed early, kept, and ranked by
    cum_logprob / len ** length_penalty like the live ones."""
    llm = make_llm(tiny_models)
    prompt = random_prompts(1, 10, 10, 512, seed=43)[0]
    probe = llm.beam_search({"prompt_token_ids": prompt}, BeamSearchParams(beam_width=3, max_tokens=4, ignore_eos=True))
    eos = probe[0].sequences[0].tokens[len(prompt) + 1]  # the best beam's second token
    llm.llm_engine.input_processor.eos_token_id = eos
    for penalty in (0.0, 1.0, 3.0):
        out = llm.beam_search({"prompt_token_ids": prompt}, BeamSearchParams(beam_width=3, max_tokens=4,
                                                                            length_penalty=penalty))[0]
        assert any(s.finish_reason == "stop" and s.tokens[-1] == eos for s in out.sequences)
        assert all(eos not in s.tokens[len(prompt):-1] for s in out.sequences)
        keys = [beam_search_score(s.tokens, s.cum_logprob, eos, penalty) for s in out.sequences]
        assert keys == sorted(keys, reverse=True)


def test_beam_search_score() -> None:
    assert beam_search_score([1, 2, 3, 4], -2.0, None, 1.0) == -0.5
    assert beam_search_score([1, 2, 3, 9], -3.0, 9, 1.0) == -1.0  # a final EOS is not counted
    assert beam_search_score([1, 2], -2.0, None, 0.0) == -2.0


def test_too_wide_for_max_logprobs(tiny_models) -> None:  # type: ignore[no-untyped-def]
    llm = make_llm(tiny_models)
    with pytest.raises(RequestError, match="beam_width=11 needs 22 logprobs per step but max_logprobs is 20"):
        llm.beam_search({"prompt_token_ids": [5, 6]}, BeamSearchParams(beam_width=11, max_tokens=2))
