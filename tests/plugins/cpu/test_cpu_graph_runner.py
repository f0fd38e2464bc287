"""Recorded decode plans (``vllm_cpu.plan``, ``vllm_cpu.graph_runner``): a replayed step computes
what the eager step computes, bit for bit, KV cache writes included; steps that do arithmetic
outside the kernels are refused and run eagerly; the engine's greedy output is the same with plans and without,
and the same as transformers'."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import hf_greedy, import_or_require, random_prompts, require_or_skip

import_or_require("vllm_cpu", "cpu")

from vllm_core import LLM, SamplingParams  # noqa: E402
from vllm_core.errors import ConfigError  # noqa: E402
from vllm_core.worker.graph_runner import batch_buckets  # noqa: E402
from vllm_cpu.graph_runner import (  # noqa: E402
    DEFAULT_MAX_BATCH,
    ENV_MAX_BATCH,
    CPUGraphRunner,
    max_captured_batch,
    plan_sizes,
)
from vllm_cpu.kernels import loaded_kernels, unavailable_reason  # noqa: E402
from vllm_cpu.ops import CPUOps  # noqa: E402
from vllm_cpu.plan import NotCapturable, record  # noqa: E402

BUCKETS = plan_sizes(256, DEFAULT_MAX_BATCH)  # the default max_num_seqs


def _kernels_or_skip() -> None:
    if loaded_kernels() is None:
        require_or_skip("cpu-kernels", f"the C kernels do not run here: {unavailable_reason() or 'not loaded'}")


def _llm(path: str, dtype: str = "float32", **kw):  # type: ignore[no-untyped-def]
    return LLM(path, device="cpu", dtype=dtype, max_model_len=256, num_gpu_blocks_override=16, block_size=16,
               use_tqdm_on_load=False, skip_tokenizer_init=True, seed=0, **kw)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_replayed_plan_equals_the_eager_step_bit_for_bit(tiny_models, dtype: str) -> None:  # type: ignore[no-untyped-def]
    path, _ = tiny_models["llama"]
    llm = _llm(path, dtype)
    _kernels_or_skip()
    runner = llm.llm_engine.core.runner
    graphs = runner.graph_runner
    assert isinstance(graphs, CPUGraphRunner) and graphs.captured_sizes == BUCKETS
    assert graphs.recorded_sizes == [BUCKETS[-1]]  # the others are recorded by their first step
    buf, model = graphs.buffers, runner.model
    g = torch.Generator().manual_seed(1)
    for cache in runner.kv_caches:
        cache.copy_(torch.randn(cache.shape, generator=g).to(cache.dtype))
    n, bs = 3, 4  # three rows in the bucket of four: the padded row writes and changes nothing
    lens = torch.tensor([5, 17, 40], dtype=torch.int32)
    tables = torch.randperm(16, generator=g)[: n * 3].view(n, 3).int()
    buf.input_ids[:n] = torch.randint(3, 512, (n,), generator=g)
    buf.positions[:n] = lens - 1
    slots = [int(tables[i, (int(lens[i]) - 1) // 16]) * 16 + (int(lens[i]) - 1) % 16 for i in range(n)]
    buf.slot_mapping[:n] = torch.tensor(slots)
    buf.slot_mapping[n:bs] = -1
    buf.block_tables[:n, :3] = tables
    buf.seq_lens[:n] = lens
    buf.seq_lens[n:bs] = 1
    before = [c.clone() for c in runner.kv_caches]
    plan = graphs._record(bs)  # the first step of the bucket records it (and computes the step)
    assert plan is not None and graphs.recorded_sizes == [bs, BUCKETS[-1]]
    # the smaller buckets' buffers are views of the largest one's
    assert set(plan.storages()) <= set(graphs.plans[BUCKETS[-1]].storages())
    recorded = plan.output.clone()
    after_record = [c.clone() for c in runner.kv_caches]
    for cache, old in zip(runner.kv_caches, before, strict=True):
        cache.copy_(old)
    replayed = plan.run().clone()
    after_replay = [c.clone() for c in runner.kv_caches]
    for cache, old in zip(runner.kv_caches, before, strict=True):
        cache.copy_(old)
    with torch.inference_mode():
        eager = model(buf.input_ids[:bs], buf.positions[:bs], buf.metadata(bs))
    assert torch.equal(replayed[:n], eager[:n]) and torch.equal(recorded[:n], eager[:n])
    for cache, replay_cache, record_cache, old in zip(runner.kv_caches, after_replay, after_record, before,
                                                      strict=True):
        assert torch.equal(cache, replay_cache) and torch.equal(cache, record_cache)
        assert not torch.equal(cache, old)  # the step wrote its keys and values


def test_verification_step_replays_the_decode_plans(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """Rows of several tokens (a request verifying drafts, a short prefill) replay the decode
    plans as one decode row per token (``DecodeBuffers.load_flat``): the same hidden states and
    KV writes as the eager step; a row longer than ``MAX_FLAT_QUERY`` runs eagerly."""
    from vllm_core.core.sched_output import ScheduledRequest, SchedulerOutput
    from vllm_core.worker.graph_runner import MAX_FLAT_QUERY
    from vllm_core.worker.input_batch import prepare_inputs

    path, _ = tiny_models["llama"]
    llm = _llm(path)
    _kernels_or_skip()
    runner = llm.llm_engine.core.runner
    g = torch.Generator().manual_seed(2)
    for cache in runner.kv_caches:
        cache.copy_(torch.randn(cache.shape, generator=g))
    params = SamplingParams(temperature=0.0, max_tokens=8)

    def row(rid: str, n: int, start: int, blocks: list[int], drafts: int) -> ScheduledRequest:
        ids = torch.randint(3, 512, (n,), generator=g).tolist()
        return ScheduledRequest(rid, ids, start, blocks, params, True, 0, None, draft_token_ids=ids[n - drafts:])

    rows = [row("a", 1, 20, [0, 1], 0), row("b", 5, 30, [2, 3, 4], 4), row("c", 3, 0, [5], 0), row("d", 4, 14, [6], 3)]
    inputs = prepare_inputs(SchedulerOutput(rows, 13), 16, torch.device("cpu"))
    before = [c.clone() for c in runner.kv_caches]
    with torch.inference_mode():
        replayed = runner.graph_runner.try_run(inputs)
        assert replayed is not None, "a verification step did not replay the plans"
        replayed = replayed.clone()
        after_replay = [c.clone() for c in runner.kv_caches]
        for cache, old in zip(runner.kv_caches, before, strict=True):
            cache.copy_(old)
        eager = runner.model(inputs.input_ids, inputs.positions, inputs.metadata)
        assert runner.graph_runner.recorded_sizes == [16, BUCKETS[-1]]  # recorded by that step
        for cache, old in zip(runner.kv_caches, before, strict=True):
            cache.copy_(old)
        again = runner.graph_runner.try_run(inputs)  # now a replay
        assert again is not None and torch.equal(again, replayed)
    assert replayed.shape == eager.shape == (13, 64)
    torch.testing.assert_close(replayed, eager, atol=1e-5, rtol=1e-5)
    for cache, replay_cache in zip(runner.kv_caches, after_replay, strict=True):
        assert torch.equal(cache, replay_cache)
    long = [row("e", MAX_FLAT_QUERY + 1, 0, [7], 0)]
    assert runner.graph_runner.try_run(prepare_inputs(SchedulerOutput(long, MAX_FLAT_QUERY + 1), 16,
                                                      torch.device("cpu"))) is None


def test_plan_survives_the_ops_replacing_their_scratch(tiny_models) -> None:  # type: ignore[no-untyped-def]
    """A prefill larger than any captured batch grows the gated MLP's scratch; the plans keep the
    one they were recorded with."""
    path, _ = tiny_models["llama"]
    llm = _llm(path)
    _kernels_or_skip()
    runner = llm.llm_engine.core.runner
    ops = runner.platform.ops
    assert isinstance(ops, CPUOps)
    recorded = ops.keep_alive()[0]
    prompt = random_prompts(1, 230, 230, 512, seed=3)[0]
    out = llm.generate([{"prompt_token_ids": prompt}], SamplingParams(temperature=0, max_tokens=6, ignore_eos=True),
                       use_tqdm=False)
    assert ops.keep_alive()[0].data_ptr() != recorded.data_ptr()  # 230 rows: a larger scratch
    eager = _llm(path, enforce_eager=True)
    want = eager.generate([{"prompt_token_ids": prompt}], SamplingParams(temperature=0, max_tokens=6, ignore_eos=True),
                          use_tqdm=False)
    assert out[0].outputs[0].token_ids == want[0].outputs[0].token_ids


@pytest.mark.parametrize(("arch", "dtype"), [("llama", "float32"), ("qwen2", "float32"), ("qwen3", "float32"),
                                           ("llama", "float16")])
def test_engine_with_plans_matches_transformers_and_eager(
    tiny_models, arch: str, dtype: str, caplog: pytest.LogCaptureFixture  # type: ignore[no-untyped-def]
) -> None:
    """float16 runs on PyTorch's ops here (the kernels take float32 and bfloat16): its capture is
    refused with a warning naming the ops, and its decode steps run eagerly."""
    path, hf = tiny_models[arch]
    prompts = random_prompts(5, 3, 30, 512, seed=7)
    # different lengths: the batch shrinks 5 -> 1 through the buckets 5, 4, 3, 2 and 1
    params = [SamplingParams(temperature=0, max_tokens=4 + 5 * i, ignore_eos=True) for i in range(5)]
    inputs = [{"prompt_token_ids": p} for p in prompts]
    llm = _llm(path, dtype)
    _kernels_or_skip()
    captured = llm.llm_engine.core.runner.graph_runner.captured_sizes
    if dtype == "float16":
        assert captured == [] and "decode steps run eagerly" in caplog.text and "aten." in caplog.text
    else:
        assert captured == BUCKETS
    got = [o.outputs[0].token_ids for o in llm.generate(inputs, params, use_tqdm=False)]
    if dtype != "float16":  # the buckets the shrinking batch used were recorded by their first steps
        assert {1, 2, 5} <= set(llm.llm_engine.core.runner.graph_runner.recorded_sizes)
    eager = _llm(path, dtype, enforce_eager=True)
    assert eager.llm_engine.core.runner.graph_runner is None
    assert got == [o.outputs[0].token_ids for o in eager.generate(inputs, params, use_tqdm=False)]
    if dtype == "float32":
        for prompt, sp, ids in zip(prompts, params, got, strict=True):
            assert ids == hf_greedy(hf, prompt, sp.max_tokens)


def test_steps_with_tensor_ops_outside_the_kernels_are_refused() -> None:
    _kernels_or_skip()
    ops = CPUOps(loaded_kernels())
    x, w = torch.randn(4, 64), torch.randn(32, 64)
    with torch.inference_mode():
        ops.linear(x, w)  # packs the weight outside the recording

        plan = record(ops, lambda: ops.linear(x, w))
        assert plan.num_calls == 1
        x.copy_(torch.randn(4, 64))  # a replay reads the inputs' memory as it is now
        want = ops.linear(x, w)
        assert not torch.equal(plan.output, want)
        assert torch.equal(plan.run(), want)

        with pytest.raises(NotCapturable, match=r"aten\.add"):
            record(ops, lambda: ops.linear(x, w) + 1)
        with pytest.raises(NotCapturable, match="vc_argmax_rows cannot be recorded"):
            record(ops, lambda: ops.lib.vc_argmax_rows(x.data_ptr(), 64, 4, 64, None))
    assert ops.lib is loaded_kernels().lib  # the recorder is gone after a refusal


def test_plans_cover_every_size_up_to_eight_for_verification_rows() -> None:
    """1 + k rows of a verification step run as a plan of exactly that many rows (k <= 7)."""
    assert plan_sizes(256, DEFAULT_MAX_BATCH) == [1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 48, 64]
    assert plan_sizes(3, DEFAULT_MAX_BATCH) == [1, 2, 3]
    assert plan_sizes(256, 4) == [1, 2, 3, 4]
    assert set(batch_buckets(256, DEFAULT_MAX_BATCH)) <= set(plan_sizes(256, DEFAULT_MAX_BATCH))


def test_writes_into_existing_memory_are_replayed_in_their_place() -> None:
    """An ``out=`` add between two kernel calls (EAGLE-3's hidden-state tap) is kept by the plan
    and replayed between them, reading and writing the memory it did when recorded."""
    _kernels_or_skip()
    ops = CPUOps(loaded_kernels())
    x, w, w2 = torch.randn(4, 64), torch.randn(32, 64), torch.randn(16, 32)
    bias, tap = torch.randn(4, 32), torch.empty(4, 32)

    def step() -> torch.Tensor:
        torch.add(ops.linear(x, w), bias, out=tap)
        return ops.linear(tap, w2)

    with torch.inference_mode():
        step()  # packs the weights outside the recording
        plan = record(ops, step)
        assert plan.num_calls == 2 and plan.num_eager == 1
        x.copy_(torch.randn(4, 64))
        bias.copy_(torch.randn(4, 32))
        want, want_tap = step().clone(), tap.clone()
        tap.zero_()  # a replay that ran the add after the second kernel would read these zeros
        assert torch.equal(plan.run(), want) and torch.equal(tap, want_tap)


def test_a_bucket_refused_at_its_first_step_runs_eagerly(caplog: pytest.LogCaptureFixture) -> None:
    """Buckets other than the largest are recorded by their first step; a recording refused
    there (tensor ops outside the kernels) gives None (the runner runs the step eagerly), logs
    why and drops every plan, and the ops get their library back."""
    from vllm_core.core.sched_output import ScheduledRequest, SchedulerOutput
    from vllm_core.worker.input_batch import prepare_inputs

    _kernels_or_skip()
    ops = CPUOps(loaded_kernels())

    class Step(torch.nn.Module):  # a step that does arithmetic outside the kernels below 4 rows
        def __init__(self) -> None:
            super().__init__()
            self.x, self.w = torch.randn(8, 64), torch.randn(32, 64)

        def forward(self, ids: torch.Tensor, positions: torch.Tensor, metadata: object) -> torch.Tensor:
            out = ops.linear(self.x[: ids.shape[0]], self.w)
            return out + 1 if ids.shape[0] < 4 else out

    runner = CPUGraphRunner(Step(), ops, 8, 64, 16, 8)
    runner.capture()
    assert runner.recorded_sizes == [8] and runner.captured_sizes == plan_sizes(8, 8)
    params = SamplingParams(temperature=0.0, max_tokens=4)
    rows = [ScheduledRequest(f"r{i}", [5], 10, [i], params, True, 0, None) for i in range(2)]
    with torch.inference_mode():
        assert runner.try_run(prepare_inputs(SchedulerOutput(rows, 2), 16, torch.device("cpu"))) is None
        assert runner.captured_sizes == [] and "recording 2 rows refused" in caplog.text
        assert ops.lib is loaded_kernels().lib
        assert runner.try_run(prepare_inputs(SchedulerOutput(rows, 2), 16, torch.device("cpu"))) is None


def test_max_batch_setting(monkeypatch: pytest.MonkeyPatch, tiny_models) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv(ENV_MAX_BATCH, raising=False)
    assert max_captured_batch() == DEFAULT_MAX_BATCH
    for bad in ("-1", "many"):
        monkeypatch.setenv(ENV_MAX_BATCH, bad)
        with pytest.raises(ConfigError, match=ENV_MAX_BATCH):
            max_captured_batch()
    path, _ = tiny_models["llama"]
    monkeypatch.setenv(ENV_MAX_BATCH, "0")
    assert _llm(path).llm_engine.core.runner.graph_runner is None
    monkeypatch.setenv(ENV_MAX_BATCH, "5")
    llm = _llm(path, max_num_seqs=3)
    _kernels_or_skip()
    assert llm.llm_engine.core.runner.graph_runner.captured_sizes == [1, 2, 3]


def test_embedding_op_matches_torch_and_rejects_bad_ids() -> None:
    _kernels_or_skip()
    ops = CPUOps(loaded_kernels())
    for dtype in (torch.float32, torch.bfloat16):
        table = torch.randn(50, 24).to(dtype)
        ids = torch.tensor([[0, 49, 7], [7, 3, 1]])
        assert torch.equal(ops.embedding(ids, table), torch.nn.functional.embedding(ids, table))
        with pytest.raises(IndexError):
            ops.embedding(torch.tensor([3, 50]), table)
