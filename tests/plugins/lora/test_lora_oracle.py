"""Greedy token ids through the engine equal PEFT's for every adapter, in one mixed batch with
base-model requests and more adapters than ``max_loras`` (slots are swapped within the run),
with chunked prefill and prefix caching on, on the reference and cpu platforms (and cuda on a GPU)."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from tests.conftest import import_or_require, installed_platforms, random_prompts
from tests.plugins.lora.conftest import ADAPTERS, peft_greedy, save_adapter
from vllm_core import LLM, LoRARequest, SamplingParams

MAX_TOKENS = 8
DEVICES = [d for d in installed_platforms() if d in ("reference", "cpu", "cuda")]
"""cuda (with vllm-cuda on a GPU) runs the Triton LoRA kernels and CUDA graphs under the same oracle."""


def make_llm(path: str, device: str, **kw: Any) -> LLM:
    args: dict[str, Any] = dict(
        dtype="float32", device=device, max_model_len=128, skip_tokenizer_init=True, use_tqdm_on_load=False,
        enable_lora=True, max_loras=2, max_lora_rank=32, max_cpu_loras=3, block_size=8,
        enable_prefix_caching=True, max_num_batched_tokens=32, kv_cache_memory_bytes=1 << 22,
    )
    args.update(kw)
    return LLM(path, **args)


def requests_for(adapters: dict[str, str]) -> list[LoRARequest | None]:
    return [None] + [LoRARequest(name, i + 1, adapters[name]) for i, name in enumerate(a.name for a in ADAPTERS)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_mixed_batch_matches_peft(lora_models: dict[str, Any], arch: str, device: str) -> None:
    """Base + 4 adapters (ranks 4-32, different targets), 2 prompts each sharing a prefix, plus
    the same prompt under every adapter, in one generate with max_loras=2 (the others wait and
    swap in), max_cpu_loras=3 (host eviction), chunked prefill and prefix caching."""
    path, base, adapters = lora_models[arch]
    loras = requests_for(adapters)
    prompts = random_prompts(2, 6, 20, 512, seed=3, prefix=list(range(10, 30)))
    batch = [(p, lr) for lr in loras for p in prompts]
    llm = make_llm(path, device)
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": p} for p, _ in batch], params, use_tqdm=False,
                        lora_request=[lr for _, lr in batch])
    got = {(tuple(p), None if lr is None else lr.lora_name): list(o.outputs[0].token_ids)
           for (p, lr), o in zip(batch, outs)}
    for (p, name), tokens in got.items():
        want = peft_greedy(base, None if name is None else adapters[name], list(p), MAX_TOKENS)
        assert tokens == want, f"{arch}/{device} adapter {name}: {tokens} != PEFT {want}"
    # every adapter changes the output: the test would catch an adapter that is ignored
    for p in prompts:
        outputs = [tuple(got[(tuple(p), None if lr is None else lr.lora_name)]) for lr in loras]
        assert len(set(outputs)) == len(outputs), "two adapters (or an adapter and the base) gave the same tokens"
    ext = llm.llm_engine.core.runner.extensions.get("lora")
    assert ext is not None and len(ext.host.digests) <= 3
    pool = llm.llm_engine.core.kv_cache_manager.pool
    assert pool.num_free_blocks == pool.num_blocks


def test_async_scheduling_and_preemption(lora_models: dict[str, Any]) -> None:
    """One step ahead (async scheduling) with a KV cache small enough to preempt: requests of
    several adapters are recomputed and keep their adapters' tokens."""
    path, base, adapters = lora_models["qwen3"]
    loras = requests_for(adapters)
    prompts = random_prompts(10, 20, 40, 512, seed=9)
    llm = make_llm(path, DEVICES[0], async_scheduling=True, num_gpu_blocks_override=20, kv_cache_memory_bytes=None,
                   max_num_batched_tokens=24)
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    per = [loras[i % len(loras)] for i in range(len(prompts))]
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False, lora_request=per)
    for p, lr, o in zip(prompts, per, outs):
        assert list(o.outputs[0].token_ids) == peft_greedy(base, None if lr is None else lr.lora_path, p, MAX_TOKENS)
    assert llm.llm_engine.core.scheduler.async_scheduling
    assert llm.llm_engine.core.scheduler.num_preemptions > 0


@pytest.mark.parametrize("device", DEVICES[:1])
def test_base_then_adapter_same_prompt_share_no_blocks(lora_models: dict[str, Any], device: str) -> None:
    """The base model fills the prefix cache with a prompt; the same prompt under an adapter
    then hits nothing and gives the adapter's tokens (vLLM keys blocks by adapter too), while
    the same prompt under the same adapter again does hit."""
    path, base, adapters = lora_models["llama"]
    llm = make_llm(path, device)
    prompt = random_prompts(1, 40, 40, 512, seed=7)[0]
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    lr = LoRARequest("all16", 1, adapters["all16"])
    first = llm.generate({"prompt_token_ids": prompt}, params, use_tqdm=False)[0]
    under = llm.generate({"prompt_token_ids": prompt}, params, use_tqdm=False, lora_request=lr)[0]
    again = llm.generate({"prompt_token_ids": prompt}, params, use_tqdm=False, lora_request=lr)[0]
    assert list(first.outputs[0].token_ids) == peft_greedy(base, None, prompt, MAX_TOKENS)
    assert list(under.outputs[0].token_ids) == peft_greedy(base, adapters["all16"], prompt, MAX_TOKENS)
    assert under.num_cached_tokens == 0
    assert again.num_cached_tokens > 0 and again.outputs[0].token_ids == under.outputs[0].token_ids


def test_reload_under_the_same_name_gives_the_new_weights(lora_models: dict[str, Any], tmp_path: Any) -> None:
    """An adapter rewritten in place (same name, id and path, new weights) gives the new
    weights' tokens: its content digest changed, so no stale KV block or slot is reused."""
    path, base, adapters = lora_models["llama"]
    adir = str(tmp_path / "sql")
    shutil.copytree(adapters["qv8"], adir)
    llm = make_llm(path, DEVICES[0])
    prompt = random_prompts(1, 30, 30, 512, seed=11)[0]
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    lr = LoRARequest("sql", 1, adir)
    old = llm.generate({"prompt_token_ids": prompt}, params, use_tqdm=False, lora_request=lr)[0]
    assert list(old.outputs[0].token_ids) == peft_greedy(base, adir, prompt, MAX_TOKENS)
    shutil.rmtree(adir)
    save_adapter(base, ADAPTERS[0], adir, seed=999)
    os.utime(os.path.join(adir, "adapter_model.safetensors"))
    new = llm.generate({"prompt_token_ids": prompt}, params, use_tqdm=False, lora_request=lr)[0]
    want = peft_greedy(base, adir, prompt, MAX_TOKENS)
    assert list(new.outputs[0].token_ids) == want and want != list(old.outputs[0].token_ids)
    assert new.num_cached_tokens == 0


def test_beam_search_takes_lora_request(lora_models: dict[str, Any]) -> None:
    """``beam_search`` runs every beam with its prompt's adapter: width 1 equals greedy."""
    from vllm_core.sampling_params import BeamSearchParams

    path, base, adapters = lora_models["qwen3"]
    llm = make_llm(path, DEVICES[0])
    prompt = random_prompts(1, 12, 12, 512, seed=5)[0]
    lr = LoRARequest("mlp4", 3, adapters["mlp4"])
    beams = llm.beam_search([{"prompt_token_ids": prompt}], BeamSearchParams(beam_width=1, max_tokens=4,
                            ignore_eos=True), lora_request=[lr])
    assert beams[0].sequences[0].tokens[len(prompt):] == peft_greedy(base, adapters["mlp4"], prompt, 4)


def test_triton_kernels_through_the_engine(lora_models: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """The Triton kernels inside the engine (interpreted on the CPU, or on the GPU) give PEFT's
    tokens for a base request and two adapters in one batch."""
    import_or_require("triton", "triton")
    monkeypatch.setenv("VLLM_LORA_OPS", "triton")
    path, base, adapters = lora_models["llama"]
    device = "cuda" if "cuda" in DEVICES else "reference"
    assert device == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"  # conftest sets it without a GPU
    llm = make_llm(path, device, max_lora_rank=16, max_num_batched_tokens=64)
    ext = llm.llm_engine.core.runner.extensions.get("lora")
    assert ext is not None and ext.ops.name == "triton"
    prompts = random_prompts(3, 10, 20, 512, seed=4)
    loras = [None, LoRARequest("qv8", 1, adapters["qv8"]), LoRARequest("all16", 2, adapters["all16"])]
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], SamplingParams(max_tokens=4, temperature=0.0,
                        ignore_eos=True), use_tqdm=False, lora_request=loras)
    for p, lr, o in zip(prompts, loras, outs):
        assert list(o.outputs[0].token_ids) == peft_greedy(base, None if lr is None else lr.lora_path, p, 4)


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_lm_head_lora_in_prompt_logprobs_and_sampled_logprobs(lora_models: dict[str, Any], arch: str) -> None:
    """An adapter with an ``lm_head`` LoRA (untied llama, tied qwen3): the prompt logprobs
    (``compute_logits`` over prompt rows, in chunks of max_num_batched_tokens) and the sampled
    token's logprob equal PEFT's log-softmax, next to a base request in the same step whose
    logprobs stay the base model's."""
    import copy

    import torch
    from peft import PeftModel

    path, base, adapters = lora_models[arch]
    llm = make_llm(path, DEVICES[0])
    prompts = random_prompts(2, 40, 40, 512, seed=17)
    lr = LoRARequest("mlp4", 3, adapters["mlp4"])
    params = SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True, prompt_logprobs=0, logprobs=0)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False, lora_request=[lr, None])
    peft = PeftModel.from_pretrained(copy.deepcopy(base), adapters["mlp4"]).eval()
    for model, prompt, out in ((peft, prompts[0], outs[0]), (base, prompts[1], outs[1])):
        full = prompt + list(out.outputs[0].token_ids)
        with torch.no_grad():
            want = model(torch.tensor([full])).logits[0].float().log_softmax(-1)
        plp = out.prompt_logprobs
        assert plp is not None and plp[0] is None
        for pos in range(1, len(prompt)):
            got = plp[pos][prompt[pos]].logprob  # type: ignore[index]
            assert abs(got - float(want[pos - 1, prompt[pos]])) < 1e-3, (arch, pos)
        sampled = out.outputs[0].token_ids[0]
        got = out.outputs[0].logprobs[0][sampled].logprob  # type: ignore[index]
        assert abs(got - float(want[len(prompt) - 1, sampled])) < 1e-3


def test_adapters_in_speculative_steps(lora_models: dict[str, Any]) -> None:
    """n-gram speculative decoding with adapters: verification steps carry several rows per
    request (each with its request's slot, the lm_head LoRA's logits rows included); greedy ids
    stay PEFT's."""
    path, base, adapters = lora_models["llama"]
    loras = requests_for(adapters)
    prompts = [random_prompts(1, 6, 6, 512, seed=30 + i)[0] * 4 for i in range(len(loras))]  # repeats: drafts
    llm = make_llm(path, DEVICES[0], max_num_batched_tokens=64, speculative_config={
        "method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 1, "prompt_lookup_max": 3})
    sched = llm.llm_engine.core.scheduler
    schedule, drafted = sched.schedule, []

    def recording() -> Any:
        out = schedule()
        drafted.extend(sr.draft_token_ids for sr in out.scheduled if sr.draft_token_ids)
        return out

    sched.schedule = recording  # observes the steps, changes nothing
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False, lora_request=loras)
    for p, lr, o in zip(prompts, loras, outs):
        want = peft_greedy(base, None if lr is None else lr.lora_path, p, MAX_TOKENS)
        assert list(o.outputs[0].token_ids) == want, f"adapter {None if lr is None else lr.lora_name}"
    assert drafted, "no step carried draft tokens"
