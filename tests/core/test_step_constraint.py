"""``StepConstraint``: a feature's admission rule per step, without a model. A constraint that
lets one "group" run at a time: requests of another group wait (keeping their queue order) and
start once the running group is done; requests without the extension are never held back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from vllm_core.config import SchedulerConfig
from vllm_core.core.kv_cache_manager import KVCacheManager
from vllm_core.core.sched_output import ModelRunnerOutput
from vllm_core.core.scheduler import Scheduler
from vllm_core.core.step_constraint import StepConstraint
from vllm_core.extensions.state import ExtensionState, RequestExtension
from vllm_core.request import Request
from vllm_core.sampling_params import SamplingParams


@dataclass(frozen=True)
class Group(RequestExtension):
    name: str


class OneGroupAtATime(StepConstraint):
    def __init__(self) -> None:
        self.current: str | None = None

    def begin_step(self, running: Sequence[ExtensionState]) -> None:
        groups = {g.name for g in (e.get(Group) for e in running) if g is not None}
        assert len(groups) <= 1
        self.current = next(iter(groups), None)

    def admit(self, extensions: ExtensionState) -> bool:
        g = extensions.get(Group)
        if g is None or self.current in (None, g.name):
            self.current = self.current if g is None else g.name
            return True
        return False


def request(rid: str, group: str | None) -> Request:
    ext = ExtensionState([Group(group)] if group else [])
    return Request(rid, [1, 2, 3], SamplingParams(max_tokens=2), None, 2, extensions=ext)


def test_constraint_holds_other_groups_back_in_order() -> None:
    sched = Scheduler(SchedulerConfig(max_num_batched_tokens=64), KVCacheManager(64, 4, True), 128,
                      constraints=[OneGroupAtATime()])
    for rid, group in [("a1", "a"), ("b1", "b"), ("n1", None), ("a2", "a"), ("b2", "b")]:
        sched.add_request(request(rid, group))
    started: list[list[str]] = []
    while sched.has_unfinished_requests():
        out = sched.schedule()
        new = [sr.req_id for sr in out.scheduled if sr.start_pos == 0]
        started.append(new)
        groups = {g.name for r in sched.running if (g := r.extensions.get(Group)) is not None}
        assert len(groups) <= 1
        sched.update_from_output(out, ModelRunnerOutput([[7] if sr.sample else [] for sr in out.scheduled]))
    assert started[0] == ["a1", "n1", "a2"]  # b1 and b2 wait, the base request does not
    assert [rid for step in started[1:] for rid in step] == ["b1", "b2"]
