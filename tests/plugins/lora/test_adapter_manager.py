"""Host LRU order, device slot reuse, pinned adapters, and the ``max_loras`` step constraint
through a real engine (no step ever holds more adapters than slots; the rest wait)."""

from __future__ import annotations

from typing import Any

import pytest
from vllm_lora.adapter import AdapterError, ModelShapes, check_adapter, load_adapter
from vllm_lora.extension import MaxAdaptersConstraint
from vllm_lora.manager import DeviceSlots, HostAdapters
from vllm_lora.request import AdapterRef

from tests.conftest import random_prompts
from tests.plugins.lora.test_lora_oracle import DEVICES, make_llm, requests_for
from vllm_core import SamplingParams
from vllm_core.plugins.api import ExtensionState


def specs(lora_models: dict[str, Any]) -> dict[str, Any]:
    _, base, adapters = lora_models["llama"]
    shapes = ModelShapes.from_hf_config(base.config)
    return {name: check_adapter(path, shapes, 32) for name, path in adapters.items()}


def test_host_lru_evicts_least_recently_used_unpinned(lora_models: dict[str, Any]) -> None:
    s = specs(lora_models)
    host = HostAdapters(capacity=2, background=False)
    host.acquire(s["qv8"])
    host.acquire(s["all16"])
    host.release(s["qv8"].digest)
    host.release(s["all16"].digest)
    host.get(s["qv8"].digest)  # qv8 is now the most recent
    host.acquire(s["mlp4"])  # evicts all16, the least recently used
    assert host.digests == [s["qv8"].digest, s["mlp4"].digest]
    host.acquire(s["ku32"])  # evicts qv8; mlp4 is pinned (in use) and stays
    assert host.digests == [s["mlp4"].digest, s["ku32"].digest]
    host.acquire(s["qv8"])  # every held adapter is pinned: the cache goes over capacity, evicts none
    assert len(host.digests) == 3
    host.release(s["mlp4"].digest)
    assert host.digests == [s["ku32"].digest, s["qv8"].digest]


def test_device_slots_keep_resident_adapters_and_reuse_the_oldest() -> None:
    slots = DeviceSlots(2)
    where, load = slots.assign(["a", "b"])
    assert where == {"a": 0, "b": 1} and load == [(0, "a"), (1, "b")]
    where, load = slots.assign(["b"])
    assert where == {"b": 1} and load == []
    where, load = slots.assign(["b", "c"])  # a's slot is the least recently used one not needed
    assert where == {"b": 1, "c": 0} and load == [(0, "c")]
    where, load = slots.assign(["a", "b"])  # c (slot 0) was used later than... b too: c goes
    assert where["b"] == 1 and load == [(0, "a")]


def test_constraint_admits_at_most_max_loras_adapters(lora_models: dict[str, Any]) -> None:
    s = specs(lora_models)
    refs = {n: ExtensionState([AdapterRef(n, i + 1, spec)]) for i, (n, spec) in enumerate(s.items())}
    c = MaxAdaptersConstraint(2)
    c.begin_step([refs["qv8"], ExtensionState()])
    assert c.admit(ExtensionState()) and c.admit(refs["qv8"])
    assert c.admit(refs["all16"]) and c.admit(refs["all16"])
    assert not c.admit(refs["mlp4"])
    c.begin_step([])
    assert c.admit(refs["mlp4"])


def test_lora_requests_info_names_running_and_waiting_adapters(lora_models: dict[str, Any]) -> None:
    """vLLM's ``vllm:lora_requests_info`` labels: each adapter's request name once, in queue
    order, base requests left out, and ``max_lora``; the value is the sample's time."""
    import time

    s = specs(lora_models)
    refs = {n: ExtensionState([AdapterRef(n, i + 1, spec)]) for i, (n, spec) in enumerate(s.items())}
    before = time.time()
    (gauge,) = MaxAdaptersConstraint(2).info_gauges(
        [refs["all16"], ExtensionState(), refs["qv8"], refs["all16"]], [refs["mlp4"], refs["ku32"], refs["mlp4"]])
    assert gauge.name == "vllm:lora_requests_info"
    assert dict(gauge.labels) == {"max_lora": "2", "running_lora_adapters": "all16,qv8",
                                  "waiting_lora_adapters": "mlp4,ku32"}
    assert before <= gauge.value <= time.time()
    (idle,) = MaxAdaptersConstraint(2).info_gauges([], [ExtensionState()])
    assert dict(idle.labels)["running_lora_adapters"] == dict(idle.labels)["waiting_lora_adapters"] == ""


def test_no_step_holds_more_adapters_than_slots(lora_models: dict[str, Any]) -> None:
    """max_loras=1 with four adapters and base requests: every step's running requests use at
    most one adapter, the waiting ones are never refused, and all finish."""
    path, _, adapters = lora_models["llama"]
    llm = make_llm(path, DEVICES[0], max_loras=1, max_cpu_loras=2)
    engine = llm.llm_engine
    core = engine.core
    loras = requests_for(adapters)
    params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    for i, p in enumerate(random_prompts(10, 5, 12, 512, seed=2)):
        engine.add_request(str(i), {"prompt_token_ids": p}, params, {"lora_request": loras[i % len(loras)]})
    finished, most, seen_waiting = set(), 0, False
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                finished.add(out.request_id)
        running = {ref.digest for r in core.scheduler.running if (ref := r.extensions.get(AdapterRef)) is not None}
        most = max(most, len(running))
        assert len(running) <= 1
        if running and core.scheduler.waiting:  # the engine's stats report both queues' adapters
            from vllm_core.engine.core_client import _stats

            (info,) = [g for g in _stats(core).info_gauges if g.name == "vllm:lora_requests_info"]
            labels = dict(info.labels)
            waiting = {ref.name for r in core.scheduler.waiting if (ref := r.extensions.get(AdapterRef)) is not None}
            assert len(labels["running_lora_adapters"].split(",")) == 1 and labels["max_lora"] == "1"
            assert set(filter(None, labels["waiting_lora_adapters"].split(","))) == waiting
            seen_waiting = seen_waiting or bool(waiting)
    assert finished == {str(i) for i in range(10)} and most == 1 and seen_waiting


def test_an_adapter_rewritten_after_its_check_is_refused(lora_models: dict[str, Any], tmp_path: Any) -> None:
    """The engine core loads exactly the content the front end checked (its digest keys the KV
    blocks): bytes that changed in between are an error, never served under the old digest."""
    import shutil

    from tests.plugins.lora.conftest import ADAPTERS, save_adapter

    _, base, adapters = lora_models["llama"]
    adir = str(tmp_path / "a")
    shutil.copytree(adapters["qv8"], adir)
    spec = check_adapter(adir, ModelShapes.from_hf_config(base.config), 32)
    assert set(load_adapter(spec)) == set(spec.modules)
    shutil.rmtree(adir)
    save_adapter(base, ADAPTERS[0], adir, seed=5)
    with pytest.raises(AdapterError, match="changed after the request was checked"):
        load_adapter(spec)
