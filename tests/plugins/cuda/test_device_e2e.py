"""On a real NVIDIA GPU (skipped elsewhere): greedy tokens of the cuda platform equal
transformers' in float32 (with n-gram, draft-model, EAGLE and EAGLE-3 speculation too), CUDA-graph
replay equals eager, bfloat16 stays close."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import hf_greedy, random_prompts
from vllm_core import LLM, SamplingParams

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")

NEW = 48


def run(path: str, prompts: list[list[int]], **kw) -> list[list[int]]:  # type: ignore[no-untyped-def]
    llm = LLM(path, device="cuda", max_model_len=192, skip_tokenizer_init=True, num_gpu_blocks_override=256,
              use_tqdm_on_load=False, **kw)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        SamplingParams(temperature=0, max_tokens=NEW, ignore_eos=True, detokenize=False), use_tqdm=False)
    return [o.outputs[0].token_ids for o in outs]


NGRAM = {"speculative_config": {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 1,
                                "prompt_lookup_max": 3}, "max_num_batched_tokens": 32, "enable_prefix_caching": True,
         "block_size": 8}


DRAFT_SELF = {"speculative_config": {"method": "draft_model", "model": "<target>", "num_speculative_tokens": 3},
              "max_num_batched_tokens": 32, "block_size": 8}
"""The target drafting for itself (its own KV cache beside the target's, eager draft passes)."""


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "qwen3"])
@pytest.mark.parametrize("engine", [{}, {"max_num_batched_tokens": 16}, {"enable_prefix_caching": True, "block_size": 8},
                                    NGRAM, DRAFT_SELF])
def test_float32_matches_transformers(tiny_models, arch: str, engine: dict) -> None:  # type: ignore[no-untyped-def]
    path, hf = tiny_models[arch]
    if engine is DRAFT_SELF:
        engine = {**engine, "speculative_config": {**DRAFT_SELF["speculative_config"], "model": path}}
    prompts = random_prompts(16, 3, 60, 512, seed=1)
    expected = [hf_greedy(hf, p, NEW) for p in prompts]
    assert run(path, prompts, dtype="float32", **engine) == expected


@pytest.mark.parametrize("method", ["eagle", "eagle3"])
def test_eagle_heads_match_transformers(tiny_models, tmp_path, method: str) -> None:  # type: ignore[no-untyped-def]
    """Random EAGLE / EAGLE-3 heads on the GPU (the target's hidden states captured in its CUDA
    graphs, verification steps replayed as decode graphs): transformers' greedy tokens."""
    from vllm_core.spec_decode.random_heads import save_eagle_head

    path, hf = tiny_models["llama"]
    head = save_eagle_head(str(tmp_path / method), hf.config, method, own_embedding=method == "eagle",
                           draft_vocab_size=128 if method == "eagle3" else None)
    prompts = random_prompts(16, 3, 60, 512, seed=1)
    expected = [hf_greedy(hf, p, NEW) for p in prompts]
    spec = {"method": method, "model": head, "num_speculative_tokens": 3, "min_acceptance_rate": 0.0}
    assert run(path, prompts, dtype="float32", speculative_config=spec, max_num_batched_tokens=32, block_size=8,
               enable_prefix_caching=True) == expected


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_graph_replay_equals_eager(tiny_models, arch: str) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_models[arch]
    prompts = random_prompts(13, 3, 60, 512, seed=2)
    for dtype in ("float32", "bfloat16"):
        assert run(path, prompts, dtype=dtype) == run(path, prompts, dtype=dtype, enforce_eager=True)


def test_bfloat16_mostly_agrees_with_float32(tiny_models) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_models["llama"]
    prompts = random_prompts(8, 3, 60, 512, seed=3)
    fp32, bf16 = run(path, prompts, dtype="float32"), run(path, prompts, dtype="bfloat16")
    assert sum(a[:4] == b[:4] for a, b in zip(fp32, bf16)) >= 6


def hf_greedy_with_top5(model, prompt: list[int], n: int) -> tuple[list[int], list[set[int]]]:  # type: ignore[no-untyped-def]
    """transformers' greedy tokens and each position's top-5 token ids (full forward per step)."""
    ids, tokens, tops = list(prompt), [], []
    with torch.no_grad():
        for _ in range(n):
            logits = model(torch.tensor([ids], device=model.device)).logits[0, -1].float()
            top = logits.topk(5).indices.tolist()
            tokens.append(top[0])
            tops.append(set(top))
            ids.append(top[0])
    return tokens, tops


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_bfloat16_close_to_transformers_bfloat16(tiny_models, arch: str) -> None:  # type: ignore[no-untyped-def]
    """vLLM's ``check_logprobs_close`` rule: greedy bf16 tokens equal transformers' bf16 ones up
    to the first divergence, where each side's token is among the other's top-5."""
    import copy

    path, hf = tiny_models[arch]
    hf16 = copy.deepcopy(hf).to("cuda", torch.bfloat16).eval()
    prompts = random_prompts(8, 3, 60, 512, seed=4)
    llm = LLM(path, device="cuda", dtype="bfloat16", max_model_len=192, skip_tokenizer_init=True,
              num_gpu_blocks_override=256, use_tqdm_on_load=False)
    params = SamplingParams(temperature=0, max_tokens=NEW, ignore_eos=True, detokenize=False, logprobs=5)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    for prompt, out in zip(prompts, outs):
        ours = out.outputs[0].token_ids
        our_tops = [set(pos) for pos in out.outputs[0].logprobs or []]
        theirs, their_tops = hf_greedy_with_top5(hf16, prompt, NEW)
        for i, (a, b) in enumerate(zip(ours, theirs)):
            if a != b:
                assert a in their_tops[i], f"position {i}: our token {a} not in transformers' top-5 {their_tops[i]}"
                assert b in our_tops[i], f"position {i}: transformers' token {b} not in our top-5 {our_tops[i]}"
                break
