"""Host LRU order, device slot reuse, pinned adapters, and the ``max_loras`` step constraint
through a real engine (no step ever holds more adapters than slots; the rest wait)."""

from __future__ import annotations

from typing import Any

import pytest
from vllm_lora.adapter import AdapterError, ModelShapes, check_adapter, load_adapter
from vllm_lora.admission import MaxAdaptersConstraint
from vllm_lora.manager import DeviceSlots, HostAdapters
from vllm_lora.request import AdapterRef

from tests.conftest import random_prompts
from tests.plugins.lora.test_lora_oracle import DEVICES, make_llm, requests_for
from vllm_core import LoRARequest, SamplingParams
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


def test_constraint_drains_a_resident_adapter_for_one_that_waited_too_long(lora_models: dict[str, Any]) -> None:
    """After ``max_wait_steps`` refused steps an adapter is starving: the resident adapter with
    the fewest running requests stops admitting new ones, and the slot it frees goes to the
    starving adapter, not to another waiting one."""
    s = specs(lora_models)
    refs = {n: ExtensionState([AdapterRef(n, i + 1, spec)]) for i, (n, spec) in enumerate(s.items())}
    c = MaxAdaptersConstraint(2, max_wait_steps=3)
    running = [refs["qv8"], refs["qv8"], refs["all16"]]
    for _ in range(3):
        c.begin_step(running)
        assert c.admit(refs["qv8"]) and c.admit(refs["all16"])  # resident adapters fill the batch
        assert not c.admit(refs["mlp4"])
    assert c.starving() == [] and not c.draining
    c.begin_step(running)  # mlp4 has waited 3 steps: all16 (one running request) is drained
    assert c.starving() == [s["mlp4"].digest] and c.draining == {s["all16"].digest}
    assert c.admit(refs["qv8"]) and not c.admit(refs["all16"]) and not c.admit(refs["mlp4"])
    c.begin_step([refs["qv8"]])  # all16's request finished: its slot is kept for mlp4
    assert not c.draining
    assert not c.admit(refs["ku32"]) and not c.admit(refs["all16"])
    assert c.admit(refs["mlp4"]) and c.starving() == []
    c.begin_step([refs["qv8"], refs["mlp4"]])
    assert not c.admit(refs["all16"])  # now all16 waits its turn, with its own clock


def test_no_starvation_under_steady_traffic_on_resident_adapters(lora_models: dict[str, Any]) -> None:
    """max_loras=1, a new request of adapter qv8 every step (so qv8 always has running ones)
    and one request of all16: with vLLM's rule (max_lora_wait_steps=0) all16 waits until qv8's
    traffic stops; with a bound it starts within the bound plus the drained requests' decode. Every
    request gives PEFT's tokens either way."""
    from tests.plugins.lora.conftest import peft_greedy

    path, base, adapters = lora_models["llama"]
    hot = LoRARequest("qv8", 1, adapters["qv8"])
    cold = LoRARequest("all16", 2, adapters["all16"])
    prompts = random_prompts(40, 4, 10, 512, seed=21)
    max_tokens, wait = 6, 5
    first_step: dict[int, int] = {}
    for bound in (0, wait):
        llm = make_llm(path, DEVICES[0], max_loras=1, max_cpu_loras=2, max_lora_wait_steps=bound)
        engine, params = llm.llm_engine, SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        # both adapters in host memory first (max_cpu_loras=2): a load from disk runs off the step's
        # path and takes a machine-dependent number of steps, which is not what this test counts
        for name, lr in (("warm-qv8", hot), ("warm-all16", cold)):
            engine.add_request(name, {"prompt_token_ids": prompts[0]}, params, {"lora_request": lr})
        while engine.has_unfinished_requests():
            engine.step()
        outs: dict[str, list[int]] = {}
        step = started = 0
        while step < len(prompts) or engine.has_unfinished_requests():
            if step < len(prompts):  # the cold request arrives third
                lr = cold if step == 2 else hot
                engine.add_request(str(step), {"prompt_token_ids": prompts[step]}, params, {"lora_request": lr})
            for out in engine.step():
                if out.request_id == "2" and not started:
                    started = step  # its first token
                if out.finished:
                    outs[out.request_id] = list(out.outputs[0].token_ids)
            step += 1
        first_step[bound] = started
        for rid in ("0", "2", "3", str(len(prompts) - 1)):
            adapter = adapters["all16"] if rid == "2" else adapters["qv8"]
            assert outs[rid] == peft_greedy(base, adapter, prompts[int(rid)], max_tokens), f"request {rid}"
    assert first_step[0] >= len(prompts) - 1, f"without a bound all16 was expected to wait: {first_step}"
    # the drained adapter's last admitted request still prefills and decodes, then all16 does
    assert 2 + wait <= first_step[wait] <= 2 + wait + 2 * (max_tokens + 2), first_step
