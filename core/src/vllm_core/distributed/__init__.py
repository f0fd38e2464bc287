"""Distributed execution: process groups (world, tensor parallel, pipeline parallel) and the
platform communicator their collectives run on."""

from vllm_core.distributed.communicator import Communicator, SingleRankCommunicator, TorchCommunicator
from vllm_core.distributed.parallel_state import (
    SINGLE,
    ParallelContext,
    destroy_distributed,
    init_distributed,
    output_rank,
    rank_layout,
)

__all__ = [
    "SINGLE", "Communicator", "ParallelContext", "SingleRankCommunicator", "TorchCommunicator",
    "destroy_distributed", "init_distributed", "output_rank", "rank_layout",
]
