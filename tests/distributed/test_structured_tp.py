"""Structured outputs at TP=2: each rank compiles the grammar and masks its gathered logits; the
engine holds a request until every rank's grammar is ready (``is_ready`` over the pipes), and
every constrained sample is valid. Seeded sampling gives the same text on every run: all ranks
draw the same tokens from the same generators."""

from __future__ import annotations

import re

import pytest

from tests.distributed.conftest import DEVICE
from vllm_core import LLM, SamplingParams, StructuredOutputsParams

pytest.importorskip("xgrammar")

PATTERN = r"(cat|dog)-[0-9]{2,4}"




def test_constrained_sampling_at_tp2(smol_vocab_model: str) -> None:
    llm = LLM(smol_vocab_model, dtype="float32", device=DEVICE, max_model_len=256, num_gpu_blocks_override=64,
              block_size=16, tensor_parallel_size=2, distributed_executor_backend="mp", use_tqdm_on_load=False)
    try:
        params = [
            SamplingParams(n=6, temperature=1.0, seed=0, max_tokens=40,
                           structured_outputs=StructuredOutputsParams(regex=PATTERN)),
            SamplingParams(n=4, temperature=1.0, seed=1, max_tokens=40,
                           structured_outputs=StructuredOutputsParams(choice=["yes", "no", "maybe so"])),
        ]
        first = llm.generate(["x", "y"], params, use_tqdm=False)
        regex, choice = ([c.text for c in o.outputs] for o in first)
        assert all(re.fullmatch(PATTERN, t) for t in regex), regex
        assert len(set(regex)) > 1, "really sampled"
        assert set(choice) <= {"yes", "no", "maybe so"}
        again = llm.generate(["x", "y"], params, use_tqdm=False)
        assert [[c.text for c in o.outputs] for o in again] == [regex, choice]
    finally:
        llm.llm_engine.core.executor.shutdown()
