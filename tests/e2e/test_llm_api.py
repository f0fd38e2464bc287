"""The Python API end to end on small real models: request shapes, sampling controls, stop
rules, bad input (the engine keeps serving), loaders and dtypes."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tests.conftest import hf_greedy, random_prompts, require_or_skip
from vllm_core import LLM, SamplingParams
from vllm_core.errors import ConfigError, ModelLoadError, RequestError, SamplingParamsError


@pytest.fixture(scope="module")
def llm(tiny_models) -> LLM:  # type: ignore[no-untyped-def]
    path, _ = tiny_models["llama"]
    return LLM(path, dtype="float32", max_model_len=128, skip_tokenizer_init=True,
               num_gpu_blocks_override=64, block_size=8, use_tqdm_on_load=False)


@pytest.fixture(scope="module")
def smol() -> LLM:
    from vllm_core.model_executor.model_loader.default_model import default_model_path

    try:
        default_model_path()
    except ModelLoadError as exc:
        require_or_skip("default-model", str(exc))
    return LLM(dtype="float32", max_model_len=512, num_gpu_blocks_override=128, use_tqdm_on_load=False)


def ids(*prompts: list[int]) -> list[dict[str, list[int]]]:
    return [{"prompt_token_ids": p} for p in prompts]


GREEDY = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True, detokenize=False)


def test_results_come_back_in_input_order(llm: LLM, tiny_models) -> None:  # type: ignore[no-untyped-def]
    prompts = random_prompts(6, 2, 30, 512, seed=5)
    outs = llm.generate(ids(*prompts), GREEDY, use_tqdm=False)
    assert [o.prompt_token_ids for o in outs] == prompts
    _, hf = tiny_models["llama"]
    assert outs[3].outputs[0].token_ids == hf_greedy(hf, prompts[3], 8)
    assert all(o.finished and o.outputs[0].finish_reason == "length" for o in outs)


def test_per_prompt_sampling_params(llm: LLM) -> None:
    prompts = random_prompts(2, 5, 5, 512, seed=6)
    outs = llm.generate(ids(*prompts), [GREEDY.clone(max_tokens=3), GREEDY.clone(max_tokens=5)], use_tqdm=False)
    assert [len(o.outputs[0].token_ids) for o in outs] == [3, 5]
    with pytest.raises(RequestError, match="got 1 SamplingParams for 2 prompts"):
        llm.generate(ids(*prompts), [GREEDY], use_tqdm=False)


def test_seeded_sampling_is_reproducible_and_batch_independent(llm: LLM) -> None:
    p = random_prompts(1, 10, 10, 512, seed=7)[0]
    params = SamplingParams(temperature=1.0, top_p=0.95, top_k=50, seed=1234, max_tokens=16, ignore_eos=True)
    alone = llm.generate(ids(p), params, use_tqdm=False)[0].outputs[0].token_ids
    others = random_prompts(5, 3, 40, 512, seed=8)
    mixed = llm.generate(ids(*others[:2], p, *others[2:]),
                         [SamplingParams(temperature=0.8, max_tokens=16)] * 2 + [params] + [GREEDY] * 3,
                         use_tqdm=False)[2].outputs[0].token_ids
    assert alone == mixed
    other_seed = llm.generate(ids(p), params.clone(seed=99), use_tqdm=False)[0].outputs[0].token_ids
    assert other_seed != alone


def test_n_samples(llm: LLM) -> None:
    p = random_prompts(1, 6, 6, 512, seed=9)[0]
    out = llm.generate(ids(p), SamplingParams(n=3, temperature=1.0, seed=3, max_tokens=12, ignore_eos=True),
                       use_tqdm=False)[0]
    assert [c.index for c in out.outputs] == [0, 1, 2]
    assert all(len(c.token_ids) == 12 for c in out.outputs)
    assert len({tuple(c.token_ids) for c in out.outputs}) > 1


def test_stop_token_ids_min_tokens_and_eos(llm: LLM, tiny_models) -> None:  # type: ignore[no-untyped-def]
    _, hf = tiny_models["llama"]
    p = random_prompts(1, 12, 12, 512, seed=10)[0]
    expected = hf_greedy(hf, p, 20)
    stop_tok = expected[5]
    first = expected.index(stop_tok)
    out = llm.generate(ids(p), SamplingParams(temperature=0, max_tokens=20, stop_token_ids=[stop_tok]),
                       use_tqdm=False)[0].outputs[0]
    assert out.token_ids == expected[: first + 1]
    assert (out.finish_reason, out.stop_reason) == ("stop", stop_tok)
    # min_tokens bans the stop token until enough tokens were generated
    out = llm.generate(ids(p), SamplingParams(temperature=0, max_tokens=20, min_tokens=first + 3,
                                              stop_token_ids=[stop_tok]), use_tqdm=False)[0].outputs[0]
    assert len(out.token_ids) >= first + 3
    assert stop_tok not in out.token_ids[: first + 3]


def test_max_tokens_capped_by_model_length(llm: LLM) -> None:
    p = random_prompts(1, 120, 120, 512, seed=11)[0]
    out = llm.generate(ids(p), SamplingParams(temperature=0, max_tokens=100, ignore_eos=True), use_tqdm=False)[0]
    assert len(out.outputs[0].token_ids) == 128 - 120
    assert out.outputs[0].finish_reason == "length"


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("prompt", "match"),
    [
        ({"prompt_token_ids": list(range(3, 131))}, "128 tokens but max_model_len is 128"),
        ({"prompt_token_ids": []}, "the prompt is empty"),
        ({"prompt_token_ids": [5, 999999]}, "999999 is out of the vocabulary"),
        ({"prompt_token_ids": "abc"}, "must be a list of integers"),
        ({"text": "hi"}, "needs 'prompt' or 'prompt_token_ids'"),
        (42, "prompt must be a string"),
        ("text without a tokenizer", "text prompts need a tokenizer"),
    ],
)
def test_bad_prompt_is_rejected_and_engine_keeps_serving(llm: LLM, prompt, match: str) -> None:  # type: ignore[no-untyped-def]
    good = random_prompts(1, 5, 5, 512, seed=12)[0]
    with pytest.raises(RequestError, match=match):
        llm.generate([{"prompt_token_ids": good}, prompt], GREEDY, use_tqdm=False)
    assert not llm.llm_engine.has_unfinished_requests()
    assert llm.llm_engine.core.kv_cache_manager.pool.num_free_blocks == 64
    assert len(llm.generate(ids(good), GREEDY, use_tqdm=False)[0].outputs[0].token_ids) == 8


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"temperature": -1}, "temperature"), ({"top_p": 0}, "top_p"), ({"top_k": -5}, "top_k"),
     ({"max_tokens": 0}, "max_tokens"), ({"n": 0}, "n"), ({"min_p": 2}, "min_p"),
     ({"stop": [""]}, "stop"), ({"min_tokens": 9, "max_tokens": 2}, "min_tokens")],
)
def test_bad_sampling_params(kwargs, field: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SamplingParamsError, match=rf"SamplingParams\.{field} must be"):
        SamplingParams(**kwargs)


def test_unknown_architecture(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["FancyNewForCausalLM"], "model_type": "llama",
                                                      "vocab_size": 32, "hidden_size": 8, "num_attention_heads": 2,
                                                      "num_hidden_layers": 1, "intermediate_size": 16}))
    with pytest.raises(ModelLoadError, match="'FancyNewForCausalLM' is not supported; supported: LlamaForCausalLM"):
        LLM(str(tmp_path), load_format="dummy", skip_tokenizer_init=True, use_tqdm_on_load=False)


def test_missing_model_path() -> None:
    with pytest.raises(ModelLoadError, match="model '/nonexistent/model' not found"):
        LLM("/nonexistent/model", use_tqdm_on_load=False)


def test_unknown_engine_argument_and_bad_values(tiny_models) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_models["llama"]
    with pytest.raises(ConfigError, match="unknown engine argument 'max_num_seq'"):
        LLM(path, max_num_seq=4)
    with pytest.raises(ConfigError, match="block_size"):
        LLM(path, block_size=0)
    with pytest.raises(ConfigError, match="max_model_len=100000 exceeds the model's limit 256"):
        LLM(path, max_model_len=100000, skip_tokenizer_init=True, use_tqdm_on_load=False)
    with pytest.raises(ConfigError, match="needs 16 blocks"):  # 256 tokens / 16 per block, on any platform
        LLM(path, max_model_len=256, num_gpu_blocks_override=4, block_size=16, skip_tokenizer_init=True,
            use_tqdm_on_load=False)
    with pytest.raises(ConfigError, match="unknown load_format 'pt'"):
        LLM(path, load_format="pt", skip_tokenizer_init=True, use_tqdm_on_load=False)


# ----------------------------------------------------------------------- loaders, dtypes
def test_dummy_loader_and_bfloat16(tiny_models, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_models["qwen3"]
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "config.json").write_text(open(os.path.join(path, "config.json")).read())
    llm = LLM(str(cfg_dir), load_format="dummy", dtype="bfloat16", skip_tokenizer_init=True,
              max_model_len=64, num_gpu_blocks_override=16, use_tqdm_on_load=False)
    assert llm.llm_engine.loaded.dtype is torch.bfloat16
    weights = [p for n, p in llm.llm_engine.loaded.model.named_parameters() if n.endswith("qkv_proj.weight")]
    assert weights[0].abs().max() <= 1e-3 and weights[0].abs().max() > 0
    out = llm.generate(ids([5, 6, 7]), GREEDY, use_tqdm=False)[0]
    assert len(out.outputs[0].token_ids) == 8


def test_bfloat16_close_to_float32(tiny_models) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_models["llama"]
    prompts = random_prompts(4, 5, 20, 512, seed=13)
    runs = {}
    for dtype in ("float32", "bfloat16"):
        llm = LLM(path, dtype=dtype, max_model_len=64, skip_tokenizer_init=True, num_gpu_blocks_override=32,
                  use_tqdm_on_load=False)
        runs[dtype] = [o.outputs[0].token_ids for o in llm.generate(ids(*prompts), GREEDY.clone(max_tokens=4), use_tqdm=False)]
    # bf16 rounding may flip a late token, never most of the first ones
    first = sum(a[0] == b[0] for a, b in zip(runs["float32"], runs["bfloat16"]))
    assert first >= 3


# ------------------------------------------------------------------------ text and chat
def test_text_prompts_stop_strings_and_chat(smol: LLM) -> None:
    tok = smol.get_tokenizer()
    out = smol.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=32), use_tqdm=False)[0]
    assert out.prompt == "The capital of France is"
    assert out.prompt_token_ids == tok.encode("The capital of France is")
    full = out.outputs[0].text
    assert full == tok.decode(out.outputs[0].token_ids, skip_special_tokens=True)
    stop_word = full.split()[2]
    stopped = smol.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=32, stop=[stop_word]),
                            use_tqdm=False)[0].outputs[0]
    assert stopped.text == full[: full.index(stop_word)]
    assert (stopped.finish_reason, stopped.stop_reason) == ("stop", stop_word)
    kept = smol.generate("The capital of France is", SamplingParams(temperature=0, max_tokens=32, stop=stop_word,
                                                                   include_stop_str_in_output=True),
                         use_tqdm=False)[0].outputs[0]
    assert kept.text == full[: full.index(stop_word) + len(stop_word)]
    chats = smol.chat([[{"role": "user", "content": "Say hi"}], [{"role": "system", "content": "Be brief."},
                                                                  {"role": "user", "content": "Name a colour."}]],
                      SamplingParams(temperature=0, max_tokens=16), use_tqdm=False)
    assert len(chats) == 2 and all(c.outputs[0].text for c in chats)
    with pytest.raises(RequestError, match="role 'robot' is invalid"):
        smol.chat([{"role": "robot", "content": "x"}])


def test_gguf_tokenizer_cache_round_trip(tmp_path, monkeypatch, default_model_path) -> None:  # type: ignore[no-untyped-def]
    from vllm_core.model_executor.model_loader.gguf_loader import GGUFLoader, _cache_dir

    monkeypatch.setenv("VLLM_CORE_CACHE", str(tmp_path))
    first = GGUFLoader().load_tokenizer(default_model_path, None)
    assert os.path.exists(os.path.join(_cache_dir(default_model_path), "tokenizer"))
    second = GGUFLoader().load_tokenizer(default_model_path, None)
    text = "Héllo 👋 wörld, 東京!"
    assert first.encode(text) == second.encode(text)
    assert first.chat_template == second.chat_template
    assert first.eos_token_id == second.eos_token_id


def test_block_size_defaults_to_the_platforms(tiny_models) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_models["llama"]
    llm = LLM(path, device="reference", max_model_len=64, num_gpu_blocks_override=16, use_tqdm_on_load=False,
              skip_tokenizer_init=True)
    assert llm.llm_engine.core.kv_spec.block_size == llm.llm_engine.platform.default_block_size == 16
    assert llm.llm_engine.core.kv_cache_manager.block_size == 16
    assert llm.llm_engine.core.scheduler.max_num_batched_tokens == 8192  # the platform's default budget
    explicit = LLM(path, device="reference", max_model_len=64, num_gpu_blocks_override=16, block_size=4,
                   use_tqdm_on_load=False, skip_tokenizer_init=True)
    assert explicit.llm_engine.core.kv_spec.block_size == 4
    assert explicit.generate(ids([5, 6, 7]), GREEDY, use_tqdm=False)[0].outputs[0].token_ids == \
        llm.generate(ids([5, 6, 7]), GREEDY, use_tqdm=False)[0].outputs[0].token_ids


def test_engine_start_freezes_the_startup_heap(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """Objects alive after start-up (the model's modules among them) leave the collector's
    generations, so an oldest-generation collection while serving does not rescan them."""
    import gc

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    path, _ = tiny_models["llama"]
    llm = LLM(path, dtype="float32", max_model_len=64, skip_tokenizer_init=True,
              num_gpu_blocks_override=16, block_size=8, use_tqdm_on_load=False)
    frozen = gc.get_freeze_count()
    tracked = {id(o) for o in gc.get_objects()}
    modules = list(llm.llm_engine.loaded.model.modules())
    assert frozen > len(modules)
    assert not any(id(m) in tracked for m in modules)
    out = llm.generate(ids([5, 6, 7]), GREEDY, use_tqdm=False)
    assert len(out[0].outputs[0].token_ids) == 8
