"""The real model: SmolLM2-135M-Instruct from its GGUF file, chat prompts, greedy token ids
equal to transformers' ``generate`` (float32) under every engine setting."""

from __future__ import annotations

import pytest

from tests.conftest import hf_greedy, installed_platforms
from tests.e2e.settings import SETTINGS, assert_speculation_ran, engine_args
from vllm_core import LLM, SamplingParams

NEW_TOKENS = 48
QUESTIONS = [
    "What is the capital of France?",
    "Write a short story about a robot who learns to paint.",
    "Explain photosynthesis to a child.",
    "List five fruits and describe their colours.",
    "Why is the sky blue?",
    "Give me three tips for learning a new language.",
    "What is 17 times 23? Show your steps.",
    "Describe the water cycle.",
    "Write a haiku about autumn leaves.",
    "How do airplanes stay in the air?",
    "Tell me about the history of the bicycle.",
    "What are the benefits of regular exercise?",
    "Translate 'good morning, my friend' into French and Spanish.",
    "Explain what a computer program is.",
    "Suggest a name for a small coffee shop and explain why.",
    "What do bees do in winter?",
]
SHARED = (
    "You are reviewing questions from a long list of school homework assignments. For each one, answer "
    "clearly and kindly, in a few sentences, as a patient teacher would. Here is the next question: "
)


def conversations(shared_prefix: bool) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": (SHARED if shared_prefix else "") + q}] for q in QUESTIONS]


@pytest.fixture(scope="module")
def prompt_ids(default_model_path: str):  # type: ignore[no-untyped-def]
    """shared_prefix -> token ids of the 16 chat prompts, through the model's own template."""
    from vllm_core.model_executor.model_loader.gguf_loader import GGUFLoader
    from vllm_core.tokenizers.chat import apply_chat_template

    tok = GGUFLoader().load_tokenizer(default_model_path, None)
    return {
        shared: [tok.encode(apply_chat_template(tok, c), add_special_tokens=False) for c in conversations(shared)]
        for shared in (False, True)
    }


@pytest.fixture(scope="module")
def expected(hf_default_model, prompt_ids):  # type: ignore[no-untyped-def]
    return {
        shared: [hf_greedy(hf_default_model, p, NEW_TOKENS, stop_at_eos=True) for p in ids]
        for shared, ids in prompt_ids.items()
    }


@pytest.mark.parametrize("device", installed_platforms())
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_smollm2_chat_matches_transformers(default_model_path, prompt_ids, expected, setting: str, device: str) -> None:  # type: ignore[no-untyped-def]
    spec = SETTINGS[setting]
    shared = spec.get("shared_prefix", False)
    convs = conversations(shared)
    want = expected[shared]
    if not spec["batch"]:
        convs, want = convs[:1], want[:1]
    engine = engine_args(setting, default_model_path)
    engine.setdefault("num_gpu_blocks_override", 512)
    if setting in ("preempt", "async"):
        engine["num_gpu_blocks_override"] = 40  # 320 tokens: two conversations at a time
    if setting == "draft":
        engine["num_gpu_blocks_override"] = 512  # two 135M models: preemption is left to the tiny models
    if device == "cpu":
        # the oracle is transformers' float32 model: the dequantized path (the cpu platform
        # otherwise keeps the file's Q4_1 blocks; tests/plugins/cpu/test_cpu_quant_model.py)
        engine["quantization"] = "none"
    llm = LLM(default_model_path, dtype="float32", device=device, max_model_len=256,
              enable_prefix_caching=engine.pop("enable_prefix_caching", False), use_tqdm_on_load=False, **engine)
    outs = llm.chat(convs, SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS), use_tqdm=False)
    assert [o.prompt_token_ids for o in outs] == prompt_ids[shared][: len(outs)]
    for i, (o, e) in enumerate(zip(outs, want)):
        assert o.outputs[0].token_ids == e, f"{setting}/{device}: conversation {i} differs"
    tok = llm.get_tokenizer()
    assert outs[0].outputs[0].text == tok.decode(want[0], skip_special_tokens=True)
    if spec["batch"]:
        assert sum(len(e) == NEW_TOKENS for e in want) >= len(want) // 2, "most answers should run the full length"
    core = llm.llm_engine.core
    if setting in ("preempt", "async"):
        assert core.scheduler.num_preemptions > 0
    if setting == "prefix":
        assert min(o.num_cached_tokens for o in outs[1:]) >= 32
    if setting in ("ngram", "draft"):
        assert_speculation_ran(core)


def test_default_model_answers_capital_of_france(default_model_path) -> None:  # type: ignore[no-untyped-def]
    llm = LLM(dtype="float32", max_model_len=512, num_gpu_blocks_override=64, use_tqdm_on_load=False)
    out = llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                   SamplingParams(temperature=0.0, max_tokens=32), use_tqdm=False)[0]
    assert "Paris" in out.outputs[0].text
    assert out.outputs[0].finish_reason == "stop"
