"""The real model on XLA:CPU: SmolLM2-135M-Instruct (GGUF, 30 layers, vocabulary 49152) gives
transformers' greedy token ids for a batch of prompts that mixes prefills and decodes, with no
compilation after warm-up (about 2 minutes here: most of it is XLA:CPU compiling and running
30 layers at the lowest optimisation level)."""

from __future__ import annotations

from typing import Any

from tests.conftest import hf_greedy, import_or_require
from vllm_core import LLM, SamplingParams

import_or_require("torch_xla", "tpu")
import_or_require("vllm_tpu", "tpu")

QUESTIONS = ["What is the capital of France?", "Why is the sky blue? Explain it to a child in simple words.", "Hi"]
NEW_TOKENS = 16


def test_smollm2_greedy_matches_transformers(default_model_path: str, hf_default_model: Any) -> None:
    llm = LLM(default_model_path, device="tpu", dtype="float32", max_model_len=256, block_size=16,
              max_num_batched_tokens=32, max_num_seqs=8, num_gpu_blocks_override=64, use_tqdm_on_load=False)
    tok = llm.get_tokenizer()
    prompts = [tok.encode(q) for q in QUESTIONS]
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True, detokenize=False)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    for p, o in zip(prompts, outs):
        assert list(o.outputs[0].token_ids) == hf_greedy(hf_default_model, p, NEW_TOKENS)
    platform = llm.llm_engine.platform
    assert platform.warmup_compiles == 4 and platform.guard.recompilations == 0
