"""Process groups of one rank: the world, its tensor-parallel group and its pipeline group.

Ranks are laid out as vLLM's: ``rank = pp_rank * tp_size + tp_rank``, so a tensor-parallel group
is ``tp_size`` consecutive ranks (one node's devices, on the fast link) and a pipeline group is
every ``tp_size``-th rank. Each group is a ``Communicator`` made by the platform; a group of one
is a ``SingleRankCommunicator``, whose collectives are the identity (TP=1 / PP=1 pay nothing).
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vllm_core.distributed.communicator import Communicator, SingleRankCommunicator

if TYPE_CHECKING:
    from vllm_core.platforms.interface import Platform

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParallelContext:
    """Where this process sits in the world, and its groups' communicators."""

    rank: int = 0
    world_size: int = 1
    tp: Communicator = field(default_factory=SingleRankCommunicator)
    """This rank's tensor-parallel group."""
    pp: Communicator = field(default_factory=SingleRankCommunicator)
    """This rank's pipeline group (its stages in order)."""

    @property
    def tp_rank(self) -> int:
        return self.tp.rank_in_group

    @property
    def tp_size(self) -> int:
        return self.tp.world_size

    @property
    def pp_rank(self) -> int:
        return self.pp.rank_in_group

    @property
    def pp_size(self) -> int:
        return self.pp.world_size

    @property
    def is_first_stage(self) -> bool:
        return self.pp.is_first

    @property
    def is_last_stage(self) -> bool:
        return self.pp.is_last


SINGLE = ParallelContext()
"""The context of a world of one."""


def rank_layout(tp_size: int, pp_size: int) -> tuple[list[list[int]], list[list[int]]]:
    """(tensor-parallel groups, pipeline groups) as lists of global ranks."""
    tp_groups = [[s * tp_size + t for t in range(tp_size)] for s in range(pp_size)]
    pp_groups = [[s * tp_size + t for s in range(pp_size)] for t in range(tp_size)]
    return tp_groups, pp_groups


def output_rank(tp_size: int, pp_size: int) -> int:
    """The rank whose sampled tokens the engine takes: tensor rank 0 of the last stage."""
    return (pp_size - 1) * tp_size


def init_distributed(
    platform: Platform, rank: int, tp_size: int, pp_size: int, init_method: str, timeout_s: float,
) -> ParallelContext:
    """Join the world (``torch.distributed.init_process_group`` on ``platform.dist_backend``) and
    make this rank's groups. Every rank calls it with the same sizes; ``timeout_s`` bounds every
    collective, so no rank waits forever for a dead peer."""
    import torch.distributed as dist

    world_size = tp_size * pp_size
    if world_size == 1:
        return SINGLE
    timeout = datetime.timedelta(seconds=timeout_s)
    backend = platform.dist_backend
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size, timeout=timeout)
    tp_groups, pp_groups = rank_layout(tp_size, pp_size)

    def make(groups: list[list[int]]) -> Communicator:
        mine: Communicator = SingleRankCommunicator(rank)
        if len(groups[0]) == 1:
            return mine
        for ranks in groups:  # every rank creates every group, in the same order
            group = dist.new_group(ranks, timeout=timeout, backend=backend)
            if rank in ranks:
                mine = platform.make_communicator(ranks, ranks.index(rank), group)
        return mine

    ctx = ParallelContext(rank, world_size, make(tp_groups), make(pp_groups))
    logger.info(
        "rank %d of %d: tensor rank %d of %d, pipeline stage %d of %d (%s)",
        rank, world_size, ctx.tp_rank, ctx.tp_size, ctx.pp_rank, ctx.pp_size, backend,
    )
    return ctx


def destroy_distributed() -> None:
    """Leave the world (no-op when none was joined)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
