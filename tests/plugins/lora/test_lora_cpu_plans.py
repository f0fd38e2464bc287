"""LoRA inside the cpu platform's recorded plans: decode steps with adapter rows replay a plan
that holds the platform's LoRA kernel (``vc_lora``, through ``Ops.add_lora``) and give PEFT's
tokens; while a slot holds an adapter with an embedding LoRA (PyTorch ops, which a plan cannot
hold), steps with adapter rows run eagerly, with PEFT's tokens too."""

from __future__ import annotations

from typing import Any

from tests.conftest import import_or_require, random_prompts
from tests.plugins.lora.conftest import peft_greedy
from tests.plugins.lora.test_lora_oracle import MAX_TOKENS, make_llm
from vllm_core import LoRARequest, SamplingParams

import_or_require("vllm_cpu", "cpu")


def _generate(llm: Any, prompts: list[list[int]], loras: list[LoRARequest]) -> list[list[int]]:
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False, lora_request=loras)
    return [list(o.outputs[0].token_ids) for o in outs]


def test_adapter_decode_steps_replay_plans_holding_the_lora_kernel(lora_models: dict[str, Any]) -> None:
    path, base, adapters = lora_models["llama"]
    llm = make_llm(path, "cpu", max_num_batched_tokens=64)
    runner = llm.llm_engine.core.runner
    ext = runner.extensions.get("lora")
    assert ext is not None and ext.ops.kernel and ext.batch.capture_lora, ext.ops.name
    graphs = runner.graph_runner
    assert graphs is not None

    prompts = random_prompts(4, 8, 16, 512, seed=21)
    plain = [LoRARequest("qv8", 1, adapters["qv8"]), LoRARequest("all16", 2, adapters["all16"])] * 2
    for p, lr, got in zip(prompts, plain, _generate(llm, prompts, plain)):
        assert got == peft_greedy(base, lr.lora_path, p, MAX_TOKENS), f"adapter {lr.lora_name}"
    layers = base.config.num_hidden_layers
    assert graphs.plans, "no decode plan was recorded"
    for size, plan in graphs.plans.items():
        counts = plan.kernel_counts()
        assert counts.get("vc_lora") == 4 * layers, f"plan of {size} rows: {counts}"  # qkv, o, gate_up, down
    replays = sum(plan.replays for plan in graphs.plans.values())
    assert replays >= 3, f"decode steps with adapter rows replayed {replays} plans"

    # an adapter with an embedding LoRA resident: its steps run eagerly, exactly
    embedding = [LoRARequest("ku32", 3, adapters["ku32"]), LoRARequest("qv8", 1, adapters["qv8"])] * 2
    for p, lr, got in zip(prompts, embedding, _generate(llm, prompts, embedding)):
        assert got == peft_greedy(base, lr.lora_path, p, MAX_TOKENS), f"adapter {lr.lora_name}"
    assert sum(plan.replays for plan in graphs.plans.values()) == replays
    pool = llm.llm_engine.core.kv_cache_manager.pool
    assert pool.num_free_blocks == pool.num_blocks
