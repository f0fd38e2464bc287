"""Speculative decoding end to end on a tiny random-weight llama: every proposer (n-gram, a
random draft model of the same vocabulary, the target as its own draft) gives transformers'
greedy tokens under chunked prefill + prefix caching, preemption, async scheduling asked for and
``n > 1``; the off-switch; seeds; the sampled distribution (chi-square, failing with a broken
verifier); every KV block free after each run."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.conftest import hf_greedy, installed_platforms, random_prompts, save_tiny_model
from tests.e2e.spec_decode_helpers import (
    SETTINGS,
    assert_all_blocks_free,
    assert_seeded_request_ignores_batch,
    spec_of,
)
from vllm_core import LLM, SamplingParams
from vllm_core.sample.metadata import SamplingMetadata
from vllm_core.sample.rejection import DraftBatch
from vllm_core.sample.sampler import ReferenceSampler

NEW_TOKENS = 32
DEVICE = installed_platforms()[0]


@pytest.fixture(scope="module")
def models(tiny_models, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The target, a different random model of its vocabulary, prompts that repeat themselves
    (the n-gram proposer finds matches) and transformers' greedy outputs."""
    target, hf = tiny_models["llama"]
    draft = str(tmp_path_factory.mktemp("tiny-draft"))
    save_tiny_model("llama", draft, seed=5)
    prompts = [p + p[:12] for p in random_prompts(8, 4, 30, 512, seed=3)]
    return {"target": target, "draft": draft, "prompts": prompts, "expected": [hf_greedy(hf, p, NEW_TOKENS) for p in prompts]}


def proposer(name: str, models: dict[str, Any], **extra: Any) -> dict[str, Any]:
    if name == "ngram":
        spec = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 1, "prompt_lookup_max": 3}
    else:
        model = models["draft"] if name == "draft" else models["target"]
        spec = {"method": "draft_model", "model": model, "num_speculative_tokens": 3}
    return {**spec, **extra}


def make_llm(models: dict[str, Any], spec: dict[str, Any] | None, **engine: Any) -> LLM:
    args: dict[str, Any] = dict(dtype="float32", device=DEVICE, max_model_len=192, skip_tokenizer_init=True,
                                num_gpu_blocks_override=128, block_size=8, enable_prefix_caching=False,
                                use_tqdm_on_load=False)
    args.update(engine)
    return LLM(models["target"], speculative_config=spec, **args)


def greedy(n: int = 1, max_tokens: int = NEW_TOKENS) -> SamplingParams:
    return SamplingParams(n=n, temperature=0.0, max_tokens=max_tokens, ignore_eos=True, detokenize=False)


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("name", ["ngram", "draft", "self"])
def test_greedy_tokens_equal_transformers(models: dict[str, Any], name: str, setting: str) -> None:
    llm = make_llm(models, proposer(name, models), **SETTINGS[setting])
    n = 2 if setting == "n2" else 1
    outs = llm.generate([{"prompt_token_ids": p} for p in models["prompts"]], greedy(n), use_tqdm=False)
    for i, (out, want) in enumerate(zip(outs, models["expected"])):
        for c in out.outputs:
            assert list(c.token_ids) == want, f"{name}/{setting}: prompt {i} differs\n ours: {c.token_ids}\n   hf: {want}"
    core, spec = llm.llm_engine.core, spec_of(llm)
    assert spec.num_draft_tokens > 0, "no drafts were verified"
    assert core.scheduler.async_scheduling is False or setting == "async"  # drafting steps are synchronous
    if setting == "preempt":
        assert core.scheduler.num_preemptions > 0, "the KV cache was meant to be too small"
    if name == "self":  # the target drafting for itself: every draft is accepted
        assert spec.num_accepted_tokens == spec.num_draft_tokens
        assert spec.accepted_per_pos[0] == spec.num_drafts
    assert_all_blocks_free(llm)


def test_off_switch_by_batch_size_keeps_output_exact(models: dict[str, Any]) -> None:
    prompts = [{"prompt_token_ids": p} for p in models["prompts"]]
    # 8 requests, at most 4 speculate: the long ones draft only once the short ones are done
    llm = make_llm(models, proposer("self", models, disable_by_batch_size=4))
    params = [greedy(max_tokens=8 + 3 * i) for i in range(8)]
    outs = llm.generate(prompts, params, use_tqdm=False)
    for i, (out, want) in enumerate(zip(outs, models["expected"])):
        assert list(out.outputs[0].token_ids) == want[: 8 + 3 * i]
    spec = spec_of(llm)
    assert spec.policy.num_steps_off_by_batch > 0 and spec.num_draft_tokens > 0
    # the batch stays above the threshold: speculation never turns on
    llm = make_llm(models, proposer("self", models, disable_by_batch_size=7))
    outs = llm.generate(prompts, greedy(), use_tqdm=False)
    assert [list(o.outputs[0].token_ids) for o in outs] == models["expected"]
    assert spec_of(llm).num_draft_tokens == 0
    assert_all_blocks_free(llm)


def test_off_switch_by_acceptance_backs_off(models: dict[str, Any]) -> None:
    """A random draft model is almost never right: its requests are drafted for ever more rarely."""
    prompts = [{"prompt_token_ids": p} for p in models["prompts"]]
    always = make_llm(models, proposer("draft", models, min_acceptance_rate=0.0))
    backoff = make_llm(models, proposer("draft", models, min_acceptance_rate=0.5))
    got = [[list(o.outputs[0].token_ids) for o in llm.generate(prompts, greedy(), use_tqdm=False)] for llm in (always, backoff)]
    assert got[0] == got[1] == models["expected"]
    assert spec_of(backoff).num_drafts < spec_of(always).num_drafts / 2


@pytest.mark.parametrize("name", ["ngram", "draft"])
def test_seeded_request_ignores_the_rest_of_the_batch(models: dict[str, Any], name: str) -> None:
    llm = make_llm(models, proposer(name, models, min_acceptance_rate=0.0))
    assert_seeded_request_ignores_batch(llm, models["prompts"], NEW_TOKENS)


class AcceptEverything(ReferenceSampler):
    """A deliberately broken verifier: keeps every draft (plus one sampled token)."""

    def verify(self, logits: torch.Tensor, metadata: SamplingMetadata, drafts: DraftBatch,
               generator: torch.Generator | None = None,
               generators: dict[int, torch.Generator] | None = None) -> list[list[int]]:
        tokens = super().verify(logits, metadata, drafts, generator, generators)
        out, offset = [], 0
        for k, toks in zip(drafts.num_drafts, tokens):
            out.append(drafts.token_ids[offset : offset + k].tolist() + [toks[-1]])
            offset += k
        return out


def token_counts(llm: LLM, prompt: list[int], n: int, position: int) -> dict[int, int]:
    params = SamplingParams(n=n, temperature=1.0, top_k=4, max_tokens=position + 2, ignore_eos=True, detokenize=False)
    counts: dict[int, int] = {}
    for c in llm.generate({"prompt_token_ids": prompt}, params, use_tqdm=False)[0].outputs:
        counts[c.token_ids[position]] = counts.get(c.token_ids[position], 0) + 1
    return counts


@pytest.mark.parametrize(("name", "verifier"), [("draft", "rejection_sampling"), ("draft", "accept_everything"),
                                               ("self", "rejection_sampling")])
def test_sampled_distribution_is_the_targets(models: dict[str, Any], name: str, verifier: str) -> None:
    """The third sampled token (drawn by verification steps) has the same distribution with and
    without speculation (chi-square on a contingency table). Drafts are sampled from the draft
    model's own distribution (a random model: mostly rejected, so the residual draw matters; the
    target itself: q = p, so nearly every draft is kept). A verifier that keeps every draft
    makes the test fail, so it can fail."""
    stats = pytest.importorskip("scipy.stats")
    prompt = models["prompts"][1]
    n = 1000
    plain = token_counts(make_llm(models, None, num_gpu_blocks_override=1024), prompt, n, 2)
    llm = make_llm(models, proposer(name, models, min_acceptance_rate=0.0, disable_by_batch_size=None),
                   num_gpu_blocks_override=1024)
    if verifier == "accept_everything":
        llm.llm_engine.core.runner.sampler = AcceptEverything()
    spec = token_counts(llm, prompt, n, 2)
    ext = spec_of(llm)
    assert ext.num_draft_tokens >= n
    if name == "self":  # drafts drawn from the target's own distribution are (almost) always kept
        assert ext.num_accepted_tokens >= 0.98 * ext.num_draft_tokens, ext.stats()
    tokens = sorted(set(plain) | set(spec), key=lambda t: -(plain.get(t, 0) + spec.get(t, 0)))
    common = [t for t in tokens if plain.get(t, 0) + spec.get(t, 0) >= 20]
    table = [[plain.get(t, 0) for t in common], [spec.get(t, 0) for t in common]]
    table[0].append(n - sum(table[0]))
    table[1].append(n - sum(table[1]))
    if table[0][-1] + table[1][-1] == 0:
        table = [row[:-1] for row in table]
    p = float(stats.chi2_contingency(table).pvalue)
    if verifier == "rejection_sampling":
        assert p > 1e-3, f"distributions differ (p={p:.2e}): {table}"
    else:
        assert p < 1e-6, f"a broken verifier went unnoticed (p={p:.2e}): {table}"
    assert_all_blocks_free(llm)


def test_draft_model_errors_name_the_fix(models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> None:
    from transformers import AutoModelForCausalLM

    from tests.conftest import tiny_config
    from vllm_core.errors import ConfigError

    with pytest.raises(ConfigError, match="'draft_model' needs a model"):
        make_llm(models, {"method": "draft_model", "num_speculative_tokens": 2})
    config = tiny_config("llama")
    config.vocab_size = 300
    other = str(tmp_path_factory.mktemp("tiny-other-vocab"))
    AutoModelForCausalLM.from_config(config).save_pretrained(other, safe_serialization=True)
    with pytest.raises(ConfigError, match="vocabulary of 300 tokens but the target has 512"):
        make_llm(models, {"method": "draft_model", "model": other, "num_speculative_tokens": 2})


def test_async_scheduling_runs_the_steps_that_draft_nothing(models: dict[str, Any]) -> None:
    """Async scheduling asked for: while more requests run than ``disable_by_batch_size`` the
    steps run ahead of their results; once few are left the engine drafts (synchronously)."""
    prompts = [{"prompt_token_ids": p} for p in models["prompts"]]
    llm = make_llm(models, proposer("self", models, disable_by_batch_size=4), async_scheduling=True,
                   enable_prefix_caching=True, max_num_batched_tokens=24)
    params = [greedy(max_tokens=8 + 3 * i) for i in range(8)]
    outs = llm.generate(prompts, params, use_tqdm=False)
    for i, (out, want) in enumerate(zip(outs, models["expected"])):
        assert list(out.outputs[0].token_ids) == want[: 8 + 3 * i]
    core, spec = llm.llm_engine.core, spec_of(llm)
    assert core.num_async_steps > 0 and spec.num_draft_tokens > 0
    assert spec.num_accepted_tokens == spec.num_draft_tokens
    assert_all_blocks_free(llm)
    # one request whose drafts are always wrong: backed off, its paused steps run async
    llm = make_llm(models, proposer("draft", models, min_acceptance_rate=0.9), async_scheduling=True)
    out = llm.generate(prompts[0], greedy(max_tokens=NEW_TOKENS), use_tqdm=False)[0]
    assert list(out.outputs[0].token_ids) == models["expected"][0]
    assert llm.llm_engine.core.num_async_steps > 0 and spec_of(llm).num_draft_tokens > 0
    assert_all_blocks_free(llm)
