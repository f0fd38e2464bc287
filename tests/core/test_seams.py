"""The plugin API's seams on plain objects: block-hash extra keys, multi-token steps with
lookahead slots and rollback, static step shapes, the n-gram proposer, and the three core files
that must not know structured outputs."""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.core.test_scheduler import make_request, make_scheduler, prompt_of
from vllm_core.config import ParallelConfig, SpeculativeConfig
from vllm_core.core.block_pool import hash_block_tokens
from vllm_core.core.kv_cache_manager import KVCacheManager
from vllm_core.core.sched_output import ModelRunnerOutput, ScheduledRequest, SchedulerOutput
from vllm_core.errors import EngineError
from vllm_core.extensions.state import CacheSalt, ExtensionState, RequestExtension
from vllm_core.request import Request, RequestStatus
from vllm_core.sampling_params import SamplingParams
from vllm_core.spec_decode.ngram import ngram_lookup
from vllm_core.worker.input_batch import prepare_inputs
from vllm_core.worker.step_shapes import PAD_SEQ_LEN, PAD_SLOT_ID, StepShapes

CORE = pathlib.Path(__file__).resolve().parents[2] / "core" / "src" / "vllm_core"


# ------------------------------------------------------------------ block-hash extra keys
def salted(rid: str, tokens: list[int], salt: str | None) -> Request:
    ext = ExtensionState([CacheSalt(salt)]) if salt is not None else ExtensionState()
    return Request(rid, tokens, SamplingParams(max_tokens=4), None, 4, extensions=ext)


def test_same_tokens_with_different_salts_share_no_block() -> None:
    kv = KVCacheManager(32, 4, enable_caching=True)
    tokens = list(range(1, 14))  # 3 full blocks + 1 token
    first = salted("a", tokens, "tenant-1")
    assert kv.allocate_slots(first, len(tokens)) is not None
    first.num_computed_tokens = len(tokens)
    kv.cache_blocks(first)
    assert kv.get_computed_blocks(salted("b", tokens, "tenant-2")) == ([], 0)
    assert kv.get_computed_blocks(salted("c", tokens, None)) == ([], 0)
    hits, n = kv.get_computed_blocks(salted("d", tokens, "tenant-1"))
    assert n == 12 and [b.block_id for b in hits] == kv.get_block_ids("a")[:3]


def test_extension_keys_separate_blocks_and_equal_keys_share_them() -> None:
    class Adapter(RequestExtension):
        def __init__(self, digest: str) -> None:
            self.digest = digest

        def block_hash_extra_keys(self, block_index: int) -> tuple[str, ...]:
            return ("adapter", self.digest)

    kv = KVCacheManager(32, 4, enable_caching=True)
    tokens = list(range(1, 10))
    a = Request("a", tokens, SamplingParams(max_tokens=4), None, 4, extensions=ExtensionState([Adapter("x")]))
    kv.allocate_slots(a, len(tokens))
    a.num_computed_tokens = len(tokens)
    kv.cache_blocks(a)
    same = Request("b", tokens, SamplingParams(max_tokens=4), None, 4, extensions=ExtensionState([Adapter("x")]))
    other = Request("c", tokens, SamplingParams(max_tokens=4), None, 4, extensions=ExtensionState([Adapter("y")]))
    assert kv.get_computed_blocks(same)[1] == 8
    assert kv.get_computed_blocks(other)[1] == 0


def test_block_hash_is_sha256_and_independent_of_the_process() -> None:
    h = hash_block_tokens(None, [1, 2, 3], (("cache_salt", "s"),))
    assert isinstance(h, bytes) and len(h) == 32
    assert h != hash_block_tokens(None, [1, 2, 3])
    assert h != hash_block_tokens(None, [1, 2, 3], (("cache_salt", "t"),))
    assert hash_block_tokens(h, [4]) != hash_block_tokens(None, [4])
    code = (
        "from vllm_core.core.block_pool import hash_block_tokens;"
        "print(hash_block_tokens(None, [1, 2, 3], (('cache_salt', 's'),)).hex())"
    )
    for seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == h.hex()
    assert hashlib.sha256(b"x").digest_size == len(h)


def test_bad_extra_keys_are_refused() -> None:
    with pytest.raises(TypeError, match="float"):
        hash_block_tokens(None, [1], (1.5,))  # type: ignore[arg-type]


def test_extension_state_is_typed_by_class_and_picklable() -> None:
    import pickle

    state = ExtensionState([CacheSalt("s")])
    assert state.get(CacheSalt) == CacheSalt("s")
    assert pickle.loads(pickle.dumps(state)).get(CacheSalt) == CacheSalt("s")
    with pytest.raises(TypeError, match="RequestExtension"):
        state.set("not an extension")  # type: ignore[arg-type]


# ------------------------------------------------------------------ multi-token steps
def run_step(sched, tokens_of: dict[str, list[int]], drafts: dict[str, list[int]] | None = None):  # type: ignore[no-untyped-def]
    out = sched.schedule()
    sampled = [tokens_of.get(sr.req_id, []) if sr.sample else [] for sr in out.scheduled]
    return out, sched.update_from_output(out, ModelRunnerOutput(sampled, draft_token_ids=drafts))


def test_drafts_use_lookahead_slots_and_rejected_ones_roll_back() -> None:
    sched = make_scheduler(num_blocks=16)
    req = make_request("a", prompt_of(6), max_tokens=20)
    sched.add_request(req)
    run_step(sched, {"a": [100]}, drafts={"a": [101, 102, 103]})
    assert req.num_computed_tokens == 6 and req.spec_token_ids == [101, 102, 103]
    out = sched.schedule()
    (sr,) = out.scheduled
    assert sr.token_ids == [100, 101, 102, 103] and list(sr.draft_token_ids) == [101, 102, 103]
    assert len(sr.block_ids) * 4 >= 7 + 3, "lookahead slots are allocated"
    # one draft accepted, then a correction: 101 is kept, 55 replaces 102
    updates = sched.update_from_output(out, ModelRunnerOutput([[101, 55]]))
    assert updates == [(req, [101, 55])]
    assert req.output_token_ids == [100, 101, 55]
    assert req.num_computed_tokens == 8 == req.num_tokens - 1, "two rejected positions rolled back"
    for i, block in enumerate(sched.kv.req_blocks["a"][: 8 // 4]):
        assert block.token_ids == tuple(req.all_token_ids[i * 4 : (i + 1) * 4]), "only known tokens are cached"
    assert all(b.token_ids is None for b in sched.kv.req_blocks["a"][2:])


def test_drafts_are_trimmed_to_max_tokens_and_never_cached_after_finish() -> None:
    sched = make_scheduler(num_blocks=16)
    req = make_request("a", prompt_of(7), max_tokens=3)
    sched.add_request(req)
    run_step(sched, {"a": [9]}, drafts={"a": [1, 2, 3, 4]})
    out = sched.schedule()
    assert list(out.scheduled[0].draft_token_ids) == [1], "max_tokens=3 leaves room for one draft + one token"
    sched.update_from_output(out, ModelRunnerOutput([[1, 2]]))
    assert req.status is RequestStatus.FINISHED_LENGTH_CAPPED and req.output_token_ids == [9, 1, 2]
    assert sched.kv.pool.num_free_blocks == 16
    for block in sched.kv.pool.cached.values():
        assert block.token_ids in {tuple(req.all_token_ids[i : i + 4]) for i in range(0, 8, 4)}


def test_a_stop_token_among_accepted_drafts_ends_the_request_there() -> None:
    sched = make_scheduler(num_blocks=16)
    req = make_request("a", prompt_of(5), max_tokens=20, eos_token_id=2)
    sched.add_request(req)
    run_step(sched, {"a": [7]}, drafts={"a": [8, 2, 9]})
    out = sched.schedule()
    sched.update_from_output(out, ModelRunnerOutput([[8, 2, 9, 10]]))
    assert req.output_token_ids == [7, 8, 2] and req.status is RequestStatus.FINISHED_STOPPED


def test_ngram_lookup_proposes_the_continuation_of_the_latest_match() -> None:
    seq = np.array([5, 6, 7, 8, 1, 5, 6, 9, 2, 5, 6], dtype=np.int64)
    assert ngram_lookup(seq, 1, 3, 2) == [9, 2]
    assert ngram_lookup(np.array([1, 2, 3, 4]), 1, 3, 3) == []
    assert ngram_lookup(np.array([3, 3, 3]), 1, 2, 4) == [3]


def test_speculative_and_parallel_config_errors() -> None:
    with pytest.raises(ValueError, match="prompt_lookup_min"):
        SpeculativeConfig(num_speculative_tokens=2, prompt_lookup_min=4, prompt_lookup_max=2)
    assert SpeculativeConfig(num_speculative_tokens=2).lookup_range == (5, 5)
    with pytest.raises(ValueError, match="'uni' runs one process.*use 'mp'"):
        ParallelConfig(tensor_parallel_size=2, distributed_executor_backend="uni")
    assert ParallelConfig(tensor_parallel_size=2, pipeline_parallel_size=2, distributed_executor_backend="ray").world_size == 4
    assert ParallelConfig(distributed_executor_backend="uni").world_size == 1


# ------------------------------------------------------------------ static step shapes
def test_step_shapes_pad_every_dimension_and_padded_rows_touch_nothing() -> None:
    shapes = StepShapes.powers_of_two(64, 8, max_blocks=8, min_tokens=16, min_reqs=4)
    assert shapes.token_buckets == (16, 32, 64) and shapes.request_buckets == (4, 8)
    params = SamplingParams(max_tokens=4)
    rows = [
        ScheduledRequest("a", [1, 2, 3, 4, 5], 0, [3, 4], params, True, 0, None),
        ScheduledRequest("b", [7], 9, [5, 6, 7], params, True, 0, None),
    ]
    inputs = prepare_inputs(SchedulerOutput(rows, 6), 4, torch.device("cpu"), shapes)
    md = inputs.metadata
    assert inputs.input_ids.shape[0] == 16 and md.block_tables.shape == (4, 4)
    assert inputs.num_actual_tokens == 6 and inputs.num_logits_rows == 2
    assert inputs.logits_indices.tolist() == [4, 5, 0, 0]
    assert md.slot_mapping[6:].tolist() == [PAD_SLOT_ID] * 10
    assert md.seq_lens.tolist() == [5, 10, PAD_SEQ_LEN, PAD_SEQ_LEN]
    assert md.query_start_loc.tolist() == [0, 5, 6, 7, 8], "one token per padded request"
    assert md.block_tables[2:].abs().sum() == 0
    with pytest.raises(EngineError, match="largest step shape"):
        prepare_inputs(SchedulerOutput([ScheduledRequest("c", [1] * 65, 0, list(range(17)), params, True, 0, None)], 65),
                       4, torch.device("cpu"), shapes)


def test_step_shapes_refuse_unsorted_buckets() -> None:
    with pytest.raises(ValueError, match="increasing"):
        StepShapes((32, 16), (8,))


def test_native_reshape_and_cache_skips_padded_rows_without_a_host_sync() -> None:
    from vllm_core.platforms.ops import NATIVE_OPS

    kc = torch.arange(2 * 4 * 1 * 2, dtype=torch.float32).view(2, 4, 1, 2)
    vc = kc.clone()
    before = kc.clone()
    key = torch.full((3, 1, 2), -5.0)
    slots = torch.tensor([-1, 6, -1])
    NATIVE_OPS.reshape_and_cache(key, key, kc, vc, slots)
    expected = before.clone().view(8, 1, 2)
    expected[6] = -5.0
    assert torch.equal(kc.view(8, 1, 2), expected) and torch.equal(vc, kc)
    NATIVE_OPS.reshape_and_cache(key, key, kc, vc, torch.tensor([-1, -1, -1]))  # nothing written
    assert torch.equal(kc.view(8, 1, 2), expected)


# ------------------------------------------------------------------ structured outputs moved out
@pytest.mark.parametrize("path", ["worker/model_runner.py", "engine/engine_core.py", "core/scheduler.py"])
def test_core_step_files_hold_no_structured_output_code(path: str) -> None:
    text = (CORE / path).read_text().lower()
    for name in ("structured", "grammar", "xgrammar", "matcher"):
        assert name not in text, f"{path} mentions {name!r}: features plug in as runner extensions"
