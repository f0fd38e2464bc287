"""The ``ray`` backend on a local Ray instance started by the test: TP=2 greedy tokens equal
transformers, chosen by vLLM's rule (a Ray cluster is initialised), and a killed actor is a
``WorkerError``."""

from __future__ import annotations

import pytest

from tests.conftest import hf_greedy, import_or_require, random_prompts
from tests.distributed.conftest import DEVICE
from vllm_core import LLM, SamplingParams
from vllm_core.errors import WorkerError

ray = import_or_require("ray", "ray")


@pytest.fixture(scope="module")
def local_ray():  # type: ignore[no-untyped-def]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_tp2_on_ray_matches_transformers(tiny_models, local_ray) -> None:  # type: ignore[no-untyped-def]
    path, hf = tiny_models["llama"]
    prompts = random_prompts(4, 3, 30, 512, seed=3)
    expected = [hf_greedy(hf, p, 16) for p in prompts]
    llm = LLM(path, dtype="float32", device=DEVICE, skip_tokenizer_init=True, use_tqdm_on_load=False,
              max_model_len=64, num_gpu_blocks_override=32, block_size=8, tensor_parallel_size=2)
    executor = llm.llm_engine.core.executor
    assert type(executor).__name__ == "RayExecutor", "a Ray cluster is initialised: vLLM's rule picks ray"
    params = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True, detokenize=False)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in outs] == expected
    ray.kill(executor.actors[1])
    with pytest.raises(WorkerError, match="rank 1"):
        llm.generate([{"prompt_token_ids": prompts[0]}], params, use_tqdm=False)
    assert executor.actors == [], "the other actors are killed too"
    assert ray.is_initialized(), "a cluster the engine did not start is left running"
