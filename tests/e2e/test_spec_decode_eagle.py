"""EAGLE and EAGLE-3 speculative decoding on a tiny random-weight llama, with tiny random heads
in their Hugging Face layout (``vllm_core.spec_decode.random_heads``): greedy output equals transformers'
under chunked prefill + prefix caching, preemption, async scheduling asked for and ``n > 1``,
with several requests a step; the hidden states the heads read equal transformers' (the
target's output for EAGLE, three layers' inputs for EAGLE-3); a head built to copy a bigram
target has every draft accepted (EAGLE-1: fc passes the token through; EAGLE-3: attention to the
row's own position, a d2t-mapped draft vocabulary); bad configurations fail with errors that
name the fix."""

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
from vllm_core.errors import ConfigError
from vllm_core.spec_decode.random_heads import save_eagle_head

NEW_TOKENS = 24
DEVICE = installed_platforms()[0]


@pytest.fixture(scope="module")
def models(tiny_models, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The target, one EAGLE-1 head (its own embedding), one EAGLE-3 head (the target's embedding,
    a draft vocabulary of 128 ids mapped by d2t), prompts sharing a prefix, transformers' outputs."""
    target, hf = tiny_models["llama"]
    heads = {
        "eagle": save_eagle_head(str(tmp_path_factory.mktemp("eagle")), hf.config, "eagle", seed=1),
        "eagle3": save_eagle_head(str(tmp_path_factory.mktemp("eagle3")), hf.config, "eagle3", seed=2,
                                  own_embedding=False, draft_vocab_size=128),
    }
    prompts = random_prompts(6, 4, 30, 512, seed=3, prefix=list(range(10, 30)))
    return {"target": target, "hf": hf, "heads": heads, "prompts": prompts,
            "expected": [hf_greedy(hf, p, NEW_TOKENS) for p in prompts]}


def make_llm(target: str, spec: dict[str, Any] | None, **engine: Any) -> LLM:
    args: dict[str, Any] = dict(dtype="float32", device=DEVICE, max_model_len=192, skip_tokenizer_init=True,
                                num_gpu_blocks_override=128, block_size=8, enable_prefix_caching=False,
                                use_tqdm_on_load=False)
    args.update(engine)
    return LLM(target, speculative_config=spec, **args)


def spec(models: dict[str, Any], method: str, k: int = 3, **extra: Any) -> dict[str, Any]:
    return {"method": method, "model": models["heads"][method], "num_speculative_tokens": k, **extra}


def greedy(n: int = 1, max_tokens: int = NEW_TOKENS) -> SamplingParams:
    return SamplingParams(n=n, temperature=0.0, max_tokens=max_tokens, ignore_eos=True, detokenize=False)


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("method", ["eagle", "eagle3"])
def test_greedy_tokens_equal_transformers(models: dict[str, Any], method: str, setting: str) -> None:
    llm = make_llm(models["target"], spec(models, method, min_acceptance_rate=0.0), **SETTINGS[setting])
    n = 2 if setting == "n2" else 1
    outs = llm.generate([{"prompt_token_ids": p} for p in models["prompts"]], greedy(n), use_tqdm=False)
    for i, (out, want) in enumerate(zip(outs, models["expected"])):
        for c in out.outputs:
            assert list(c.token_ids) == want, f"{method}/{setting}: prompt {i} differs\n ours: {c.token_ids}\n   hf: {want}"
    core, ext = llm.llm_engine.core, spec_of(llm)
    stats = ext.stats()
    assert stats.num_drafts > 0 and stats.num_draft_tokens >= stats.num_drafts, "no drafts were verified"
    assert core.spec_decode_counters.snapshot() == stats, "the engine core's counters (/metrics) differ from the runner's"
    assert len(stats.accepted_per_pos) == 3
    if setting == "preempt":
        assert core.scheduler.num_preemptions > 0, "the KV cache was meant to be too small"
    if SETTINGS[setting].get("enable_prefix_caching"):  # the prompts share 20 tokens: later ones hit
        assert core.kv_cache_manager.prefix_hits > 0
    assert_all_blocks_free(llm)


@pytest.mark.parametrize("method", ["eagle", "eagle3"])
def test_heads_read_the_targets_hidden_states(models: dict[str, Any], method: str) -> None:
    """Every position's state in the hidden-state cache equals transformers' (EAGLE: the output
    after the final norm; EAGLE-3: ``fc`` of the inputs of layers (2, L // 2, L - 3), clipped to
    this 2-layer target), for four requests after chunked prefill, steps over more than
    ``disable_by_batch_size`` requests (plain decode steps: replayed graphs / plans where the
    platform has them) and verification steps that rolled some rows back."""
    llm = make_llm(models["target"], spec(models, method, min_acceptance_rate=0.0, disable_by_batch_size=2),
                   max_num_batched_tokens=16)
    runner = llm.llm_engine.core.runner
    proposer = spec_of(llm).proposer
    slot_of: dict[tuple[str, int], int] = {}
    accept = proposer.accept_hidden_states

    def watch(output: Any, inputs: Any, hidden: Any) -> None:  # notes where each position was written
        slots = inputs.metadata.slot_mapping.tolist()
        for row, start in zip(output.scheduled, inputs.metadata.query_start_loc_cpu):
            for j in range(row.num_tokens):
                slot_of[row.req_id, row.start_pos + j] = slots[start + j]
        accept(output, inputs, hidden)

    proposer.accept_hidden_states = watch
    replayed = []
    if runner.graph_runner is not None:
        try_run = runner.graph_runner.try_run

        def counting(inputs: Any) -> Any:
            out = try_run(inputs)
            replayed.append(out is not None)
            return out

        runner.graph_runner.try_run = counting
    prompts = models["prompts"][:4]
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], [greedy(max_tokens=8 + 4 * i) for i in range(4)],
                        use_tqdm=False)
    for prompt, out in zip(prompts, outs):
        seq = prompt + list(out.outputs[0].token_ids)
        with torch.no_grad():
            states = models["hf"](torch.tensor([seq[:-1]]), output_hidden_states=True).hidden_states
        if method == "eagle":
            want = states[-1][0]
        else:
            assert proposer.aux_layers == (1, 1, 0)
            want = torch.cat([states[i][0] for i in proposer.aux_layers], dim=-1) @ proposer.head.fc.weight.T
        rid = out.request_id
        got = proposer.hidden_cache[torch.tensor([slot_of[rid, p] for p in range(len(seq) - 1)])]
        torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)
    ext = spec_of(llm)
    assert ext.num_draft_tokens > 0 and ext.policy.num_steps_off_by_batch > 0
    if runner.graph_runner is not None:  # EAGLE-3's taps are replayed too (cpu plans: as eager writes)
        assert any(replayed), "no plain decode step replayed a graph"


def bigram_target(path: str) -> Any:
    """A llama whose layers add nothing (o_proj, down_proj zero; final norm weight 1): its next
    token is argmax(lm_head(embed(token))), a bigram model an EAGLE head can copy exactly."""
    hf = save_tiny_model("llama", path, seed=7)
    with torch.no_grad():
        for layer in hf.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        hf.model.norm.weight.fill_(1.0)
    hf.save_pretrained(path, safe_serialization=True)
    return hf


def copying_head(path: str, target_config: Any) -> str:
    """An EAGLE-1 head whose output is the embedding of the token it reads (fc = [I, 0], the
    layer adds nothing): with the target's LM head it predicts the bigram target's next token."""
    from safetensors.torch import load_file, save_file

    save_eagle_head(path, target_config, "eagle", seed=3, own_embedding=False)
    tensors = load_file(f"{path}/model.safetensors")
    h = target_config.hidden_size
    tensors["fc.weight"] = torch.cat([torch.eye(h), torch.zeros(h, h)], dim=1)
    tensors["layers.0.self_attn.o_proj.weight"].zero_()
    tensors["layers.0.mlp.down_proj.weight"].zero_()
    save_file(tensors, f"{path}/model.safetensors")
    return path


def assert_copying_head_accepted(target: str, hf: Any, method: str, head: str, seed: int) -> Any:
    """Four prompts through ``head`` (k = 4, chunked prefill, prefix caching): output equal to
    transformers', drafts made and > 95% of them accepted, every block back; the counters."""
    prompts = random_prompts(4, 4, 20, 512, seed=seed)
    llm = make_llm(target, {"method": method, "model": head, "num_speculative_tokens": 4},
                   max_num_batched_tokens=16, enable_prefix_caching=True)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], greedy(), use_tqdm=False)
    assert [list(o.outputs[0].token_ids) for o in outs] == [hf_greedy(hf, p, NEW_TOKENS) for p in prompts]
    stats = spec_of(llm).stats()
    assert stats.num_draft_tokens > 0
    assert stats.acceptance_rate > 0.95, stats
    assert_all_blocks_free(llm)
    return stats


def test_a_head_that_copies_the_target_has_its_drafts_accepted(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The head sees the right token at the right position in the catch-up and every draft pass:
    all k drafts of every step are accepted, several requests a step, chunked prefill."""
    target = str(tmp_path_factory.mktemp("bigram"))
    hf = bigram_target(target)
    head = copying_head(str(tmp_path_factory.mktemp("copy-head")), hf.config)
    stats = assert_copying_head_accepted(target, hf, "eagle", head, seed=11)
    assert stats.mean_acceptance_length > 4.0, stats


def copying_eagle3_head(path: str, hf: Any, alpha: float = 3.0) -> str:
    """An EAGLE-3 head that predicts the bigram target's next token: its own embedding of token
    ``t`` is ``[w, w, 0, 0]`` with ``w`` the unit code of the target's next token ``g(t)``; its
    attention (q = k = alpha x, v = x) picks the row's own position, so the output is ``w``; its LM
    head scores draft ids by their codes, over a draft vocabulary of the tokens the target can
    produce, mapped back by ``d2t``. ``norm_before_residual`` with a zero ``hidden_norm`` keeps the
    hidden states out (they are checked against transformers in another test)."""
    from safetensors.torch import load_file, save_file

    cfg = hf.config
    with torch.no_grad():
        follows = (hf.model.embed_tokens.weight @ hf.lm_head.weight.T).argmax(dim=-1)  # g(t)
    produced = sorted(set(follows.tolist()))
    save_eagle_head(path, cfg, "eagle3", seed=4, own_embedding=True, draft_vocab_size=len(produced),
                    norm_before_residual=True)
    t = load_file(f"{path}/model.safetensors")
    h, d = cfg.hidden_size, cfg.hidden_size // cfg.num_attention_heads  # 64, 16
    gen = torch.Generator().manual_seed(5)
    code = torch.nn.functional.normalize(torch.randn(cfg.vocab_size, d, generator=gen), dim=-1)
    embed = torch.zeros(cfg.vocab_size, h)
    embed[:, :d] = embed[:, d : 2 * d] = code[follows]
    t["embed_tokens.weight"] = embed
    t["midlayer.input_layernorm.weight"] = torch.ones(h)
    t["midlayer.hidden_norm.weight"] = torch.zeros(h)
    q, k, v = torch.zeros(h, 2 * h), torch.zeros(d * 2, 2 * h), torch.zeros(d * 2, 2 * h)
    for head in range(cfg.num_attention_heads):  # heads 0, 1 share kv group 0 (chunk 0); 2, 3 group 1
        group = head // (cfg.num_attention_heads // cfg.num_key_value_heads)
        q[head * d : (head + 1) * d, group * d : (group + 1) * d] = alpha * torch.eye(d)
    for group in range(cfg.num_key_value_heads):
        k[group * d : (group + 1) * d, group * d : (group + 1) * d] = alpha * torch.eye(d)
        v[group * d : (group + 1) * d, group * d : (group + 1) * d] = torch.eye(d)
    o = torch.zeros(h, h)
    o[:d, :d] = torch.eye(d)
    t.update({"midlayer.self_attn.q_proj.weight": q, "midlayer.self_attn.k_proj.weight": k,
              "midlayer.self_attn.v_proj.weight": v, "midlayer.self_attn.o_proj.weight": o})
    t["midlayer.post_attention_layernorm.weight"] = torch.ones(h)
    t["midlayer.mlp.down_proj.weight"].zero_()
    t["norm.weight"] = torch.ones(h)
    ids = torch.tensor(produced, dtype=torch.int64)
    lm = torch.zeros(len(produced), h)
    lm[:, :d] = code[ids]
    t["lm_head.weight"] = lm
    t["d2t"] = ids - torch.arange(len(produced))
    t.pop("t2d", None)
    save_file(t, f"{path}/model.safetensors")
    return path


def test_an_eagle3_head_that_copies_the_target_has_its_drafts_accepted(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """EAGLE-3's token path: the head's own embedding, its attention over its paged KV (the row's
    own position), ``norm_before_residual`` and a draft vocabulary mapped by ``d2t``: every
    draft accepted, output equal to transformers'."""
    target = str(tmp_path_factory.mktemp("bigram3"))
    hf = bigram_target(target)
    head = copying_eagle3_head(str(tmp_path_factory.mktemp("copy-head3")), hf)
    assert_copying_head_accepted(target, hf, "eagle3", head, seed=12)


def test_bad_configurations_name_the_fix(models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> None:
    target, hf = models["target"], models["hf"]
    with pytest.raises(ConfigError, match="'eagle' needs a model"):
        make_llm(target, {"method": "eagle", "num_speculative_tokens": 2})
    with pytest.raises(ConfigError, match="not found: give the directory of the head"):
        make_llm(target, {"method": "eagle3", "model": str(tmp_path_factory.mktemp("empty")) + "/nope",
                          "num_speculative_tokens": 2})
    with pytest.raises(ConfigError, match="num_speculative_tokens"):
        make_llm(target, {**spec(models, "eagle"), "num_speculative_tokens": 0})
    narrow = save_eagle_head(str(tmp_path_factory.mktemp("narrow")), hf.config, "eagle", hidden_size=32)
    with pytest.raises(ConfigError, match="hidden_size 32 but the target's hidden states have 64"):
        make_llm(target, {"method": "eagle", "model": narrow, "num_speculative_tokens": 2})
    other = save_eagle_head(str(tmp_path_factory.mktemp("other3")), hf.config, "eagle3", target_hidden_size=128)
    with pytest.raises(ConfigError, match=r"expects target hidden states of size 128 \(target_hidden_size / hidden_size\) but the target.s are 64"):
        make_llm(target, {"method": "eagle3", "model": other, "num_speculative_tokens": 2})
    with pytest.raises(ConfigError, match=r"reads the target.s layers \[0, 5, 1\] \(eagle_aux_hidden_state_layer_ids\) but the target has 2"):
        bad = save_eagle_head(str(tmp_path_factory.mktemp("layers3")), hf.config, "eagle3", aux_layers=[0, 5, 1])
        make_llm(target, {"method": "eagle3", "model": bad, "num_speculative_tokens": 2})


@pytest.mark.parametrize("method", ["eagle", "eagle3"])
def test_seeded_request_ignores_the_rest_of_the_batch(models: dict[str, Any], method: str) -> None:
    """Sampled requests are verified by rejection sampling (the head's argmax drafts as one-hot):
    a seeded request gives the same tokens alone and beside random requests."""
    llm = make_llm(models["target"], spec(models, method, min_acceptance_rate=0.0))
    assert_seeded_request_ignores_batch(llm, models["prompts"], NEW_TOKENS)
