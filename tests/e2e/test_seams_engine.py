"""The plugin API's seams through the real engine on tiny random-weight models: ``cache_salt``
(block-hash extra keys), a platform that fixes every step's shapes, and engine arguments of the
executor seam."""

from __future__ import annotations

import sys
import types
from typing import Any, ClassVar

import pytest

from tests.conftest import hf_greedy, random_prompts
from vllm_core import LLM, SamplingParams
from vllm_core.errors import ConfigError, ModelLoadError, RequestError
from vllm_core.plugins import register_plugin, unregister_plugin
from vllm_core.plugins.api import (
    ReferencePlatform,
    ReferenceSampler,
    ScheduledRequest,
    SchedulerOutput,
    StepShapes,
    hookimpl,
)

GREEDY = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True, detokenize=False)


@pytest.fixture(scope="module")
def llm(tiny_models):  # type: ignore[no-untyped-def]
    path, _ = tiny_models["llama"]
    return LLM(path, dtype="float32", device="reference", max_model_len=128, skip_tokenizer_init=True,
               num_gpu_blocks_override=64, block_size=8, enable_prefix_caching=True, use_tqdm_on_load=False)


def test_cache_salt_separates_prefix_cache_entries(llm) -> None:  # type: ignore[no-untyped-def]
    prompt = random_prompts(1, 40, 40, 512, seed=5)[0]
    first = llm.generate({"prompt_token_ids": prompt, "cache_salt": "tenant-a"}, GREEDY, use_tqdm=False)[0]
    other = llm.generate({"prompt_token_ids": prompt, "cache_salt": "tenant-b"}, GREEDY, use_tqdm=False)[0]
    unsalted = llm.generate({"prompt_token_ids": prompt}, GREEDY, use_tqdm=False)[0]
    again = llm.generate({"prompt_token_ids": prompt, "cache_salt": "tenant-a"}, GREEDY, use_tqdm=False)[0]
    assert first.num_cached_tokens == 0
    assert other.num_cached_tokens == 0 and unsalted.num_cached_tokens == 0, "a different salt shared blocks"
    assert again.num_cached_tokens == 32  # every full block but the last (one token is always computed)
    assert first.outputs[0].token_ids == other.outputs[0].token_ids == again.outputs[0].token_ids


def test_bad_cache_salt_is_a_request_error(llm) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RequestError, match="cache_salt must be a non-empty string"):
        llm.generate({"prompt_token_ids": [1, 2, 3], "cache_salt": 7}, GREEDY, use_tqdm=False)
    assert not llm.llm_engine.has_unfinished_requests()


# ------------------------------------------------------------ a platform with fixed step shapes
class StaticReference(ReferencePlatform):
    """The reference platform, but every step is padded to power-of-two buckets."""

    name: ClassVar[str] = "static-reference"
    priority: ClassVar[int] = -1
    distribution: ClassVar[str] = "tests"
    inference_mode: ClassVar[Any] = "no_grad"
    shapes_seen: ClassVar[set[tuple[int, ...]]] = set()

    def step_shapes(self, max_num_seqs: int, max_num_batched_tokens: int, max_model_len: int,
                    block_size: int) -> StepShapes:
        return StepShapes.powers_of_two(max_num_batched_tokens, max_num_seqs, -(-max_model_len // block_size))


@pytest.fixture
def static_platform():  # type: ignore[no-untyped-def]
    plugin = types.SimpleNamespace(VLLM_CORE_PLUGIN_API=">=1.0,<2")

    @hookimpl
    def register_platforms(register):  # type: ignore[no-untyped-def]
        register(StaticReference)

    plugin.register_platforms = register_platforms
    register_plugin(plugin, name="static-reference-test")
    yield StaticReference
    unregister_plugin(plugin)


def test_fixed_step_shapes_give_the_reference_tokens(tiny_models, static_platform) -> None:  # type: ignore[no-untyped-def]
    path, hf = tiny_models["qwen3"]
    prompts = random_prompts(6, 3, 40, 512, seed=3)
    expected = [hf_greedy(hf, p, 12) for p in prompts]
    llm = LLM(path, dtype="float32", device="static-reference", max_model_len=128, skip_tokenizer_init=True,
              num_gpu_blocks_override=64, block_size=8, max_num_batched_tokens=32, max_num_seqs=4,
              use_tqdm_on_load=False)
    runner = llm.llm_engine.core.runner
    assert runner.step_shapes is not None and runner.step_shapes.token_buckets == (16, 32)
    seen: set[tuple[int, int, int]] = set()
    model_forward = runner.model.forward

    def recording_forward(input_ids, positions, metadata):  # type: ignore[no-untyped-def]
        seen.add((int(input_ids.shape[0]), metadata.num_reqs, int(metadata.block_tables.shape[1])))
        return model_forward(input_ids, positions, metadata)

    runner.model.forward = recording_forward
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], GREEDY, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in outs] == expected
    shapes = runner.step_shapes
    assert seen and all(
        t in shapes.token_buckets and r in shapes.request_buckets and w in shapes.block_table_buckets
        for t, r, w in seen
    ), seen


class PaddedRowsSampler(ReferenceSampler):
    """The reference sampler, asking for the request bucket's rows (``pads_rows``)."""

    name: ClassVar[str] = "padded-rows-test"
    pads_rows: ClassVar[bool] = True
    rows_seen: ClassVar[set[int]] = set()

    def __call__(self, logits, metadata, generator):  # type: ignore[no-untyped-def]
        assert metadata.temperature.shape[0] == logits.shape[0]
        self.rows_seen.add(int(logits.shape[0]))
        return super().__call__(logits, metadata, generator)


class WarmedStaticReference(StaticReference):
    """Fixed step shapes, a ``pads_rows`` sampler, and a ``warm_up`` that runs one dummy step."""

    name: ClassVar[str] = "warmed-static-reference"
    warm_ups: ClassVar[list[tuple[StepShapes, int, int, int]]] = []

    def sampler_name(self) -> str:
        return PaddedRowsSampler.name

    def warm_up(self, execute, shapes, max_model_len, block_size, num_blocks):  # type: ignore[no-untyped-def]
        self.warm_ups.append((shapes, max_model_len, block_size, num_blocks))
        rows = [ScheduledRequest(f"warm-{i}", [0, 0], 0, [i], GREEDY, True, 0, None) for i in range(3)]
        assert [len(t) for t in execute(SchedulerOutput(rows, 6)).sampled_token_ids] == [1, 1, 1]


def test_padded_sampling_rows_and_warm_up(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """``Sampler.pads_rows``: the sampler sees request-bucket rows only, the padded rows' tokens
    are dropped; ``Platform.warm_up`` runs once, after the KV cache exists, with the step shapes."""
    plugin = types.SimpleNamespace(VLLM_CORE_PLUGIN_API=">=1.1,<2")

    @hookimpl
    def register_platforms(register):  # type: ignore[no-untyped-def]
        register(WarmedStaticReference)

    @hookimpl
    def register_samplers(register):  # type: ignore[no-untyped-def]
        register(PaddedRowsSampler)

    plugin.register_platforms, plugin.register_samplers = register_platforms, register_samplers
    register_plugin(plugin, name="warmed-static-reference-test")
    try:
        path, hf = tiny_models["llama"]
        prompts = random_prompts(5, 3, 40, 512, seed=4)
        llm = LLM(path, dtype="float32", device="warmed-static-reference", max_model_len=128,
                  skip_tokenizer_init=True, num_gpu_blocks_override=64, block_size=8, max_num_batched_tokens=32,
                  max_num_seqs=16, use_tqdm_on_load=False)
        assert len(WarmedStaticReference.warm_ups) == 1
        shapes, max_model_len, block_size, num_blocks = WarmedStaticReference.warm_ups[0]
        assert (shapes.request_buckets, max_model_len, block_size, num_blocks) == ((8, 16), 128, 8, 64)
        outs = llm.generate([{"prompt_token_ids": p} for p in prompts], GREEDY, use_tqdm=False)
        assert [o.outputs[0].token_ids for o in outs] == [hf_greedy(hf, p, 12) for p in prompts]
        assert PaddedRowsSampler.rows_seen == {8}
    finally:
        unregister_plugin(plugin)


def test_parallel_arguments_are_vllms_and_checked_before_any_worker_starts(tiny_models, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Sizes the model cannot be split into, the in-process backend for a world of several, and
    the ray backend without Ray are errors before a process starts (tests/distributed runs them)."""
    path, _ = tiny_models["llama"]
    with pytest.raises(ModelLoadError, match="num_attention_heads \\(4\\) is not divisible by tensor_parallel_size=3"):
        LLM(path, tensor_parallel_size=3, use_tqdm_on_load=False)
    with pytest.raises(ModelLoadError, match="pipeline_parallel_size=3 is larger than the model's 2 layers"):
        LLM(path, pipeline_parallel_size=3, use_tqdm_on_load=False)
    with pytest.raises(ConfigError, match="'uni' runs one process"):
        LLM(path, tensor_parallel_size=2, distributed_executor_backend="uni", use_tqdm_on_load=False)
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed
    with pytest.raises(ConfigError, match="pip install ray"):
        LLM(path, tensor_parallel_size=2, distributed_executor_backend="ray", use_tqdm_on_load=False)
    with pytest.raises(ConfigError, match="speculative_config must be a dict"):
        LLM(path, speculative_config="ngram", use_tqdm_on_load=False)
    with pytest.raises(ConfigError, match="unknown speculative decoding method 'medusa'; registered: draft_model, eagle, eagle3, ngram"):
        LLM(path, device="reference", skip_tokenizer_init=True, max_model_len=64,
            speculative_config={"method": "medusa", "num_speculative_tokens": 2}, use_tqdm_on_load=False)
